#!/usr/bin/env python3
"""Start, stop and query a local Neo4j Community server (embedded DBMS + Bolt) for tests.

Stdlib only. The Neo4j jars come from Maven Central through pom.xml into ~/.m2; the classpath file
and the compiled launcher live in infra/neo4j/target/. Needs `java`/`javac` (17) and `mvn` on PATH
(or JAVA_HOME).

    python3 infra/neo4j/neo4jctl.py start --home /tmp/neo4j-test --port 0   # prints bolt://127.0.0.1:PORT
    python3 infra/neo4j/neo4jctl.py status --home /tmp/neo4j-test           # prints the URI, or exit 3
    python3 infra/neo4j/neo4jctl.py stop --home /tmp/neo4j-test

The home dir holds data/, logs/debug.log, neo4j.out (launcher stdout/stderr), neo4j.pid and neo4j.uri.
With --password (or env NEO4J_PASSWORD), auth is on for user "neo4j"; otherwise auth is disabled.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LAUNCHER_SRC = HERE / "Neo4jLauncher.java"
TARGET = HERE / "target"
CLASSPATH_FILE = TARGET / "classpath.txt"
CLASSES = TARGET / "classes"
LAUNCHER_CLASS = CLASSES / "Neo4jLauncher.class"
READY_MARK = "NEO4J_READY "
USER = "neo4j"

JVM_FLAGS = [
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
]


class CtlError(Exception):
    """A failure to report on stderr with exit code 1."""


def log(msg: str) -> None:
    print(f"neo4jctl: {msg}", file=sys.stderr, flush=True)


def jdk_tool(name: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / name).exists():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        raise CtlError(f"`{name}` not found: install a JDK 17 or set JAVA_HOME")
    return found


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Serialise mvn/javac between concurrent starts (e.g. parallel test workers)."""
    TARGET.mkdir(parents=True, exist_ok=True)
    with open(TARGET / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def is_stale(output: Path, *inputs: Path) -> bool:
    if not output.exists():
        return True
    return any(src.stat().st_mtime > output.stat().st_mtime for src in inputs)


def classpath_complete(cp: str) -> bool:
    return bool(cp) and all(Path(entry).exists() for entry in cp.split(os.pathsep))


def ensure_classpath() -> str:
    """Resolve the Neo4j jars with Maven once; re-run only when pom.xml is newer or a jar is gone."""
    if not is_stale(CLASSPATH_FILE, POM):
        cp = CLASSPATH_FILE.read_text().strip()
        if classpath_complete(cp):
            return cp
    mvn = shutil.which("mvn")
    if not mvn:
        raise CtlError("`mvn` not found: install Maven (it resolves the Neo4j jars from Maven Central)")
    log("resolving the Neo4j jars with Maven (the first run downloads ~150 MB into ~/.m2)")
    tmp = CLASSPATH_FILE.with_suffix(".tmp")
    mvn_log = TARGET / "mvn.log"
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:build-classpath",
           f"-Dmdep.outputFile={tmp}", "-Dmdep.includeScope=runtime"]
    with open(mvn_log, "w") as out:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not tmp.exists():
        raise CtlError(f"mvn failed (exit {rc}); see {mvn_log}:\n{tail(mvn_log, 40)}")
    os.replace(tmp, CLASSPATH_FILE)
    return CLASSPATH_FILE.read_text().strip()


def ensure_launcher(cp: str) -> None:
    if not is_stale(LAUNCHER_CLASS, LAUNCHER_SRC, CLASSPATH_FILE):
        return
    CLASSES.mkdir(parents=True, exist_ok=True)
    cmd = [jdk_tool("javac"), "-cp", cp, "-d", str(CLASSES), str(LAUNCHER_SRC)]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise CtlError(f"javac failed:\n{res.stdout}{res.stderr}")


def tail(path: Path, lines: int) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_pid(home: Path) -> int | None:
    try:
        return int((home / "neo4j.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """True if pid is a live (non-zombie) Neo4jLauncher process."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        with contextlib.suppress(OSError):
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return b"Neo4jLauncher" in proc.joinpath("cmdline").read_bytes()  # not a recycled pid
    return True


def running_uri(home: Path) -> str | None:
    pid = read_pid(home)
    uri_file = home / "neo4j.uri"
    if pid is None or not is_alive(pid) or not uri_file.exists():
        return None
    return uri_file.read_text().strip()


def driver_ready(uri: str, password: str | None) -> bool | None:
    """verify_connectivity with the neo4j driver; None if the driver is not installed."""
    try:
        from neo4j import GraphDatabase  # optional
    except ImportError:
        return None
    auth = (USER, password) if password else None
    try:
        with GraphDatabase.driver(uri, auth=auth, connection_timeout=3) as driver:
            driver.verify_connectivity()
        return True
    except Exception:  # not up yet, or auth not set yet: retry until the deadline
        return False


def tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if is_alive(pid):
        log(f"pid {pid} did not stop within {timeout:.0f}s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while is_alive(pid):
            time.sleep(0.1)


def failure_report(home: Path, reason: str) -> str:
    parts = [reason, f"--- last 40 lines of {home / 'neo4j.out'} ---", tail(home / "neo4j.out", 40)]
    debug_log = home / "logs" / "debug.log"
    if debug_log.exists():
        parts += [f"--- last 40 lines of {debug_log} ---", tail(debug_log, 40)]
    return "\n".join(parts)


def start(home: Path, host: str, port: int, password: str | None, timeout: float,
          settings: list[str]) -> str:
    home.mkdir(parents=True, exist_ok=True)
    uri = running_uri(home)
    if uri:
        return uri
    pid = read_pid(home)
    if pid is not None and is_alive(pid):
        raise CtlError(f"pid {pid} runs for {home} but has no neo4j.uri (still starting?); stop it first")
    if password is not None and len(password) < 8:
        raise CtlError("the password must have at least 8 characters")
    with build_lock():
        cp = ensure_classpath()
        ensure_launcher(cp)

    port = port or free_port(host)
    address = host_port(host, port)
    uri = f"bolt://{address}"
    cmd = [jdk_tool("java"), *JVM_FLAGS, "-cp", f"{CLASSES}{os.pathsep}{cp}", "Neo4jLauncher", str(home),
           f"server.bolt.listen_address={address}", f"server.bolt.advertised_address={address}", *settings]
    env = dict(os.environ)
    env.pop("NEO4J_PASSWORD", None)
    if password:
        env["NEO4J_PASSWORD"] = password
    out_path = home / "neo4j.out"
    (home / "neo4j.uri").unlink(missing_ok=True)
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=home, start_new_session=True)
    (home / "neo4j.pid").write_text(f"{proc.pid}\n")

    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            reason = f"Neo4j exited early with code {code}"
            break
        if READY_MARK in out_path.read_text(errors="replace"):
            ready = driver_ready(uri, password)
            if ready or (ready is None and tcp_ready(host, port)):
                (home / "neo4j.uri").write_text(uri + "\n")
                return uri
        if time.monotonic() > deadline:
            reason = f"Neo4j was not ready at {uri} within {timeout:.0f}s"
            break
        time.sleep(0.25)
    terminate(proc.pid, 10)
    (home / "neo4j.pid").unlink(missing_ok=True)
    raise CtlError(failure_report(home, reason))


def stop(home: Path, timeout: float) -> None:
    pid = read_pid(home)
    if pid is not None and is_alive(pid):
        terminate(pid, timeout)
    (home / "neo4j.pid").unlink(missing_ok=True)
    (home / "neo4j.uri").unlink(missing_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start Neo4j in the background and print its bolt URI")
    p_start.add_argument("--home", type=Path, required=True)
    p_start.add_argument("--host", default="127.0.0.1")
    p_start.add_argument("--port", type=int, default=7687, help="Bolt port; 0 picks a free one")
    p_start.add_argument("--password", default=os.environ.get("NEO4J_PASSWORD"),
                         help="enable auth for user neo4j (>= 8 chars; default: env NEO4J_PASSWORD)")
    p_start.add_argument("--timeout", type=float, default=180.0)
    p_start.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                         help="extra Neo4j setting (repeatable), e.g. --set server.memory.pagecache.size=256m")
    p_stop = sub.add_parser("stop", help="stop the server of this home (no error if not running)")
    p_stop.add_argument("--home", type=Path, required=True)
    p_stop.add_argument("--timeout", type=float, default=60.0)
    p_status = sub.add_parser("status", help="print the URI and exit 0 if running, else exit 3")
    p_status.add_argument("--home", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = args.home.expanduser().resolve()
    try:
        if args.command == "start":
            print(start(home, args.host, args.port, args.password, args.timeout, args.settings), flush=True)
        elif args.command == "stop":
            stop(home, args.timeout)
        else:
            uri = running_uri(home)
            if uri is None:
                return 3
            print(uri)
    except CtlError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
