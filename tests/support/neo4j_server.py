"""Start and stop a real Neo4j server for tests, through the same script ``make neo4j-start`` uses."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
NEO4JCTL = REPOSITORY / "infra" / "neo4j" / "neo4jctl.py"


class Neo4jStartError(RuntimeError):
    """The server did not come up; the message carries the script's report and the log tail."""


@dataclass
class Neo4jServer:
    """A Neo4j server started from ``infra/neo4j`` with its data under ``home``."""

    home: Path
    uri: str = ""

    def start(self, *, port: int = 0, timeout: float = 300.0) -> str:
        environment = {key: value for key, value in os.environ.items() if key != "NEO4J_PASSWORD"}
        completed = subprocess.run(
            [sys.executable, str(NEO4JCTL), "start", "--home", str(self.home), "--port", str(port), "--timeout", str(timeout)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout + 600,  # the first start may download the jars
        )
        if completed.returncode != 0:
            raise Neo4jStartError(f"infra/neo4j/neo4jctl.py start failed ({completed.returncode}):\n{completed.stderr}")
        self.uri = completed.stdout.strip().splitlines()[-1]
        return self.uri

    def stop(self, *, timeout: float = 60.0) -> None:
        subprocess.run(
            [sys.executable, str(NEO4JCTL), "stop", "--home", str(self.home), "--timeout", str(timeout)],
            capture_output=True,
            text=True,
            check=False,
        )

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash or a pulled cable would."""
        pid_file = self.home / "neo4j.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), 9)
