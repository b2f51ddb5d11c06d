"""Webhook benchmark: signed deliveries against ``mnemoflow serve`` under load, and exactly one run per delivery.

The bench starts a stand-in Prefect API (:mod:`tests.support.prefect_standin`, in this process: it answers in
well under a millisecond, so what is measured is the receiver) and ``mnemoflow serve`` as its own process (a SQLite
store in a temporary folder, a hooks file with one ``generic`` hook, ``PREFECT_API_URL`` at the stand-in). It sends
``--deliveries`` unique signed deliveries at each concurrency (1, 8, 32, 64 in flight) and reports per level:
deliveries/s, p50/p95/p99 latency, and the server's CPU milliseconds per delivery (its process, from /proc). The
baseline for ratios is concurrency 1 in the same run; the issue's figure to beat (35-39 deliveries/s per process
before the receiver kept one Prefect client) is written beside them.

With ``--servers 1,2`` the whole series runs again with 2 ``mnemoflow serve`` processes on one store, deliveries
spread over them in turn, then a quarter as many fresh deliveries each sent to every process at once (copies), to
show whether several processes stay exactly-once and what they add. Then two Prefect-down phases: the stand-in holds every call
(``hang``), then refuses connections (stopped); the bench reports the longest time a delivery was held before its
answer (the goal: no longer than ``MNEMOFLOW_HOOKS_PREFECT_WAIT_S``, ``--wait-s``), then redelivers each once Prefect
is back. Exactly once: every delivery answered 2xx has exactly one run at the stand-in, with the id it was answered,
no key has two runs, and no run has a key the bench did not send. Writes ``bench/results/webhooks.json``; run
with ``make bench-webhooks`` (about a minute; several with a receiver as slow as the issue measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
# `python bench/webhooks.py` puts bench/ first on sys.path, where bench/prefect.py would shadow the prefect package
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPOSITORY / "bench"]
sys.path.insert(0, str(REPOSITORY))

import httpx  # noqa: E402

from bench.prefect import group_cpu_seconds, ms  # noqa: E402
from mnemoflow.flows.server.hooks.providers import sign_generic  # noqa: E402
from tests.support.prefect_standin import PrefectStandIn, prefect_standin  # noqa: E402
from tests.support.web_server import serve_processes  # noqa: E402

HOOK = "bench"
SECRET = "bench-webhook-secret"
HOOKS_YAML = f"""
hooks:
  - name: {HOOK}
    provider: generic
    secret_env: BENCH_WEBHOOK_SECRET
    deployment: run_graph/bench-webhooks
    parameters:
      input: "{{text: text}}"
"""
BEFORE_PER_S = (35.0, 39.0)
"""The issue's measure of today's receiver: deliveries/s per server process, whatever the concurrency."""
GOAL = {"deliveries_per_s_ratio_at_32": 5.0, "p99_ms_at_32": 1000.0}
"""The issue's goals: >= 5x the "before" deliveries/s (its low end) per process at 32 in flight, p99 under 1 s."""
WARMUP = 10
"""Deliveries per server before the measured levels (the first delivery opens the store and the Prefect client)."""


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


class Sender:
    """Signs and posts deliveries to the servers, and remembers every answer for the exactly-once check."""

    def __init__(self, urls: list[str], client: httpx.AsyncClient) -> None:
        self.urls = urls
        self.client = client
        self.sent: set[str] = set()
        """Every delivery id sent."""
        self.answered: dict[str, list[tuple[int, str | None]]] = {}
        """Delivery id -> every (status, flow_run_id) answered for it."""

    async def post(self, delivery: str, url: str) -> tuple[int, float]:
        """Send ``delivery`` to ``url``; its status and seconds until the answer (status 0: no answer in time)."""
        body = json.dumps({"text": f"delivery {delivery}"}).encode()
        headers = sign_generic(SECRET.encode(), body, int(time.time()), delivery=delivery)
        self.sent.add(delivery)
        began = time.perf_counter()
        try:
            reply = await self.client.post(f"{url}/hooks/{HOOK}", content=body, headers=headers)
        except httpx.TimeoutException:
            return 0, time.perf_counter() - began
        held = time.perf_counter() - began
        run = reply.json().get("flow_run_id") if reply.headers.get("content-type") == "application/json" else None
        self.answered.setdefault(delivery, []).append((reply.status_code, run))
        return reply.status_code, held

    async def level(self, count: int, concurrency: int, *, copies: int = 1) -> list[tuple[int, float]]:
        """``count`` fresh deliveries, ``concurrency`` in flight, spread over the servers in turn; with ``copies``
        > 1 each is also sent to as many servers at once. Returns (status, seconds) of every post."""
        gate = asyncio.Semaphore(concurrency)
        results: list[tuple[int, float]] = []

        async def one(index: int) -> None:
            delivery = uuid.uuid4().hex
            targets = [self.urls[(index + copy) % len(self.urls)] for copy in range(copies)]
            async with gate:
                results.extend(await asyncio.gather(*(self.post(delivery, url) for url in targets)))

        await asyncio.gather(*(one(index) for index in range(count)))
        return results

    def exactly_once(self, standin: PrefectStandIn) -> dict[str, Any]:
        """The stand-in's runs against the answers: the counts that must all be zero."""
        keys = {f"mnemoflow-hook:{HOOK}:{delivery}": delivery for delivery in self.sent}
        accepted = {delivery for delivery, answers in self.answered.items() if any(200 <= code < 300 for code, _ in answers)}
        wrong_id = [
            delivery
            for delivery in accepted
            for code, run in self.answered[delivery]
            if 200 <= code < 300 and run != standin.runs.get(f"mnemoflow-hook:{HOOK}:{delivery}")
        ]
        return {
            "deliveries": len(self.sent),
            "answered_2xx": len(accepted),
            "answered_2xx_without_run": sum(f"mnemoflow-hook:{HOOK}:{delivery}" not in standin.runs for delivery in accepted),
            "answered_another_run_id": len(wrong_id),
            "keys_with_two_runs": len(standin.doubled()),
            "runs_without_delivery": sum(key not in keys for key in standin.runs),
            "unexpected_prefect_calls": sorted(set(standin.unexpected)),
        }


def environment(folder: Path, standin: PrefectStandIn, wait_s: float) -> dict[str, str]:
    """A ``mnemoflow serve`` environment: this one without MNEMOFLOW_ variables, plus the bench's store and hook."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "PREFECT_"))}
    (folder / "hooks.yaml").write_text(HOOKS_YAML)
    env.update(
        MNEMOFLOW_STORE_BACKEND="sqlite",
        MNEMOFLOW_STORE_SQLITE_PATH=str(folder / "memory.db"),
        MNEMOFLOW_HOOKS_FILE=str(folder / "hooks.yaml"),
        MNEMOFLOW_HOOKS_PREFECT_WAIT_S=str(wait_s),
        BENCH_WEBHOOK_SECRET=SECRET,
        PREFECT_API_URL=standin.api_url,
        PREFECT_HOME=str(folder / "prefect-home"),
    )
    return env


@contextmanager
def servers(count: int, env: dict[str, str], folder: Path) -> Iterator[list[tuple[str, int]]]:
    """``count`` ``mnemoflow serve`` processes on one store; yields (url, pid)."""
    with serve_processes(count, env, folder) as started:
        yield [(url, process.pid) for url, process in started]


async def series(standin: PrefectStandIn, count: int, levels: list[int], wait_s: float, deliveries: int) -> dict[str, Any]:
    """The load levels, then the Prefect-down phases, against ``count`` server processes."""
    standin.reset()
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as name, ExitStack() as stack:
        folder = Path(name)
        started = stack.enter_context(servers(count, environment(folder, standin, wait_s), folder))
        limits = httpx.Limits(max_connections=4 * max(levels) * count, max_keepalive_connections=4 * max(levels) * count)
        async with httpx.AsyncClient(timeout=max(120.0, 10 * wait_s), limits=limits) as client:
            sender = Sender([url for url, _ in started], client)
            await sender.level(WARMUP * count, 1)
            figures: dict[str, Any] = {}
            for concurrency in levels:
                cpu_before = sum(group_cpu_seconds(pid) for _, pid in started)
                began = time.perf_counter()
                posts = await sender.level(deliveries, concurrency)
                wall = time.perf_counter() - began
                cpu = sum(group_cpu_seconds(pid) for _, pid in started) - cpu_before
                held = [seconds for _, seconds in posts]
                figures[str(concurrency)] = {
                    "deliveries_per_s": round(deliveries / wall, 1),
                    "deliveries_per_s_per_process": round(deliveries / wall / count, 1),
                    "p50_ms": ms(percentile(held, 0.50)),
                    "p95_ms": ms(percentile(held, 0.95)),
                    "p99_ms": ms(percentile(held, 0.99)),
                    "cpu_ms_per_delivery": ms(cpu / deliveries),
                    "statuses": _count(status for status, _ in posts),
                }
                print(f"servers {count} concurrency {concurrency}: {json.dumps(figures[str(concurrency)])}", file=sys.stderr)
            copies = None
            if count > 1:  # each delivery to every server at once: one run each, the other answers duplicates or 503s
                posts = await sender.level(deliveries // 4, min(levels[-1], 16), copies=count)
                copies = {"deliveries": deliveries // 4, "statuses": _count(status for status, _ in posts)}
            down = {"hang": await _down(standin, sender, "hang"), "refused": await _down(standin, sender, "refused")}
            return {
                "servers": count,
                "levels": figures,
                "copies_to_every_server": copies,
                "prefect_down": down,
                "exactly_once": sender.exactly_once(standin),
            }


def _count(statuses: Iterable[int]) -> dict[str, int]:
    """How many answers had each status."""
    counted: dict[str, int] = {}
    for status in statuses:
        counted[str(status)] = counted.get(str(status), 0) + 1
    return dict(sorted(counted.items()))


async def _down(standin: PrefectStandIn, sender: Sender, how: str, count: int = 8) -> dict[str, Any]:
    """Prefect holds every call (``hang``) or refuses connections (``refused``) while ``count`` deliveries arrive
    at once; then it answers again and each is redelivered. The longest hold is the figure."""
    if how == "hang":
        standin.mode = "hang"
    else:
        standin.stop()
    before = set(sender.sent)
    try:
        posts = await sender.level(count, count)
    finally:
        if how == "hang":
            standin.mode = "ok"
        else:
            standin.start()
    redelivered = [await sender.post(delivery, sender.urls[0]) for delivery in sorted(set(sender.sent) - before)]
    return {
        "deliveries": count,
        "longest_held_ms": ms(max(seconds for _, seconds in posts)),
        "statuses": _count(status for status, _ in posts),
        "redelivery_statuses": _count(status for status, _ in redelivered),
    }


def ratios(figures: dict[str, Any], levels: list[int]) -> dict[str, Any]:
    """Deliveries/s at each level against concurrency 1 in the same run, and per process against the issue's 35/s."""
    base = figures[str(levels[0])]["deliveries_per_s"]
    return {
        "vs_concurrency_1": {level: round(figures[level]["deliveries_per_s"] / base, 2) for level in figures},
        "per_process_vs_issue_before": {
            level: round(figures[level]["deliveries_per_s_per_process"] / BEFORE_PER_S[0], 2) for level in figures
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=400, help="unique deliveries per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32,64", help="deliveries in flight, per level (the first is the baseline)")
    parser.add_argument("--servers", default="1,2", help="server processes on one store, per series")
    parser.add_argument("--wait-s", type=float, default=5.0, help="MNEMOFLOW_HOOKS_PREFECT_WAIT_S of the servers")
    parser.add_argument("--output", type=Path, default=Path("bench/results/webhooks.json"))
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    runs: dict[str, Any] = {}
    with prefect_standin() as standin:
        for processes in (int(value) for value in args.servers.split(",")):
            run = await series(standin, processes, levels, args.wait_s, args.deliveries)
            run["ratios"] = ratios(run["levels"], levels)
            runs[str(processes)] = run
    first = next(iter(runs.values()))
    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "deliveries_per_level": args.deliveries,
        "prefect_wait_s": args.wait_s,
        "before": {"deliveries_per_s_per_process": list(BEFORE_PER_S), "p99_ms": {"8": 400, "32": 1800, "64": 4400}},
        "goal": GOAL,
        "deliveries_per_s": {level: figures["deliveries_per_s"] for level, figures in first["levels"].items()},
        "p99_ms": {level: figures["p99_ms"] for level, figures in first["levels"].items()},
        "by_servers": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{'servers':>7} {'in flight':>9} {'deliv/s':>8} {'x c=1':>6} {'x 35/s':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'cpu ms':>7}"
    )
    for count, run in runs.items():
        for level, figures in run["levels"].items():
            print(
                f"{count:>7} {level:>9} {figures['deliveries_per_s']:>8} {run['ratios']['vs_concurrency_1'][level]:>6} "
                f"{run['ratios']['per_process_vs_issue_before'][level]:>6} {figures['p50_ms']:>8} {figures['p95_ms']:>8} "
                f"{figures['p99_ms']:>8} {figures['cpu_ms_per_delivery']:>7}"
            )
        down = run["prefect_down"]
        print(
            f"{count} server(s): Prefect hanging, longest held {down['hang']['longest_held_ms']} ms; refusing, "
            f"{down['refused']['longest_held_ms']} ms (wait {args.wait_s} s); exactly once: {json.dumps(run['exactly_once'])}"
        )


if __name__ == "__main__":
    asyncio.run(main())
