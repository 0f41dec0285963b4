"""How many conversations the agent carries: a concurrency sweep, its idle cost, its limit.

    python -m tests.bench.capacity            # instant and gpu × 1, 2, 4, 8, 12, 16 sessions
    python -m tests.bench.capacity --quick    # one profile × 1, 4, 12 sessions, about 2 minutes
    python -m tests.bench.capacity --idle-only --profiles gpu   # only the idle row, about 1 minute

Sweep: for each profile the stand-ins start with that profile's speed settings (the latency
bench's PROFILES); for each session count a fresh agent runs with its default turn settings
and MAX_SESSIONS = sessions, and that many aiortc clients talk to it exactly as in the latency
bench (tests/bench/latency.py: run_session). Latency is what the client hears: end of its
speech → first loud reply frame.

The agent may be a process tree (a supervisor and its workers): its CPU and memory are sums
over the process run_agent started and every descendant, found through the parent id in
/proc/*/stat and scanned again every half second, since a worker may be restarted mid-row.

Two more rows, run once with the last profile:
- idle: the agent with no session (CPU over IDLE_SECS), then N connected sessions that hear the
  greeting out and stay silent (CPU over SILENT_SECS): CPU and memory per silent session;
- over the limit: 16 sessions asked for with MAX_SESSIONS=12: how many were served, and how
  many were refused with a 503 whose JSON says why in words (code "full" or "busy").

Printed as markdown tables and written to test-artifacts/bench-capacity.json; nothing here
asserts a goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tests.audio import LOUD_RMS
from tests.bench.latency import (
    BUSY_OTHERS,
    CONNECT_TIMEOUT_SECS,
    CPUS,
    GREETING_TIMEOUT_SECS,
    PROFILES,
    REPLY,
    REPLY_END_TIMEOUT_SECS,
    SENTENCE,
    STAGGER_SECS,
    Backends,
    Row,
    SessionResult,
    agent_log,
    cpu_seconds,
    drive,
    heard_by_llm,
    machine_ticks,
    markdown,
    prepare_speech,
    process_tree,
    run_session,
    start_backends,
    summary,
)
from tests.helpers import ARTIFACTS, agent_env, run_agent
from tests.webrtc_client import loopback_only

SWEEP_SESSIONS = (1, 2, 4, 8, 12, 16)
SWEEP_PROFILES = ("instant", "gpu")
QUICK_SESSIONS = (1, 4, 12)
SILENT_SESSIONS = 4  # few enough that the agent before issue 8 (≈ 15 % a session) is not saturated
OVER_LIMIT = (16, 12)  # sessions asked for, MAX_SESSIONS
IDLE_SECS, SILENT_SECS = 10.0, 15.0
QUICK_IDLE_SECS, QUICK_SILENT_SECS = 5.0, 8.0
SCAN_EVERY_SECS = 0.5
ROW_SETUP_SECS = 30.0  # connecting and the greeting, before the first turn
TURN_SECS = 30.0  # one turn and its reply, when the agent is far behind
REFUSAL_CODES = ("full", "busy")
MB = 1024 * 1024


def turns_for(sessions: int) -> int:
    """Turns per session: enough turns for a p95, yet every row over in well under a minute."""
    return 4 if sessions == 1 else 3 if sessions == 2 else 2 if sessions <= 8 else 1


def row_limit(sessions: int, turns: int) -> float:
    """Seconds after which a row's sessions are cancelled: an overloaded agent must not
    stretch the sweep (a cancelled turn counts as failed)."""
    return sessions * STAGGER_SECS + ROW_SETUP_SECS + turns * TURN_SECS


# --- the agent's process tree ---------------------------------------------------------------


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes that share them."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class TreeSample:
    at: float  # time.monotonic()
    cpu_secs: dict[tuple[int, int], float]  # (pid, started) → CPU at last sight, ever seen
    pids: tuple[int, ...]  # alive at this scan
    rss_bytes: int
    pss_bytes: int


class TreeWatch:
    """Scans the process tree of ``root`` every ``every`` seconds in a thread, from ``with``
    until its end, and on demand (``sample()``).

    A process's CPU time is kept at its last sight after it exits, so a worker that dies and
    is replaced still counts; what it used after the last scan before its end is lost.
    """

    def __init__(self, root: int, every: float = SCAN_EVERY_SECS) -> None:
        self.root = root
        self.every = every
        self.samples: list[TreeSample] = []
        self._cpu: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)

    def sample(self) -> TreeSample:
        with self._lock:
            members = process_tree(self.root)
            for stat in members:
                self._cpu[(stat.pid, stat.started)] = stat.cpu_secs
            taken = TreeSample(
                at=time.monotonic(),
                cpu_secs=dict(self._cpu),
                pids=tuple(stat.pid for stat in members),
                rss_bytes=sum(stat.rss_bytes for stat in members),
                pss_bytes=sum(pss_bytes(stat.pid) for stat in members),
            )
            self.samples.append(taken)
            return taken

    def _scan(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def usage(self, start: TreeSample, end: TreeSample) -> dict[str, Any]:
        """CPU between two samples (% of one core) and memory: peak in between, and at ``end``."""
        secs = end.at - start.at
        # A process first seen after ``start`` was started after it: all its CPU counts.
        cpu = sum(used - start.cpu_secs.get(key, 0.0) for key, used in end.cpu_secs.items())
        inside = [s for s in self.samples if start.at <= s.at <= end.at]
        return {
            "secs": round(secs, 1),
            "cpu_secs": round(cpu, 2),
            "cpu_percent": round(100 * cpu / secs, 1) if secs > 0 else None,
            "rss_mb_peak": round(max(s.rss_bytes for s in inside) / MB, 1),
            "pss_mb_peak": round(max(s.pss_bytes for s in inside) / MB, 1),
            "rss_mb_end": round(end.rss_bytes / MB, 1),
            "pss_mb_end": round(end.pss_bytes / MB, 1),
            "processes": max(len(s.pids) for s in inside),
            "processes_started": len(end.cpu_secs.keys() - start.cpu_secs.keys()),
        }


class OtherCpu:
    """CPU of the stand-ins and the bench's clients over a span, and of everything else."""

    def __init__(self, backends: Backends) -> None:
        self.pids = {**backends.pids, "bench_clients": os.getpid()}
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine_before = machine_ticks()
        self.started = time.monotonic()

    def percent(self, agent_percent: float) -> dict[str, int]:
        wall = time.monotonic() - self.started
        cpu = {
            name: round(100 * (cpu_seconds(pid) - self.before[name]) / wall)
            for name, pid in self.pids.items()
        }
        busy, total = machine_ticks()
        machine = 100 * (busy - self.machine_before[0]) / (total - self.machine_before[1])
        # Anything else running here (another test run, say) distorts the figures.
        cpu["others"] = max(0, round(machine * CPUS - sum(cpu.values()) - agent_percent))
        cpu["machine"] = round(machine)
        return cpu


# --- rows -----------------------------------------------------------------------------------


def turn_figures(results: list[SessionResult], turns: int) -> dict[str, Any]:
    latencies = [ms for result in results for ms in result.latencies_ms]
    greetings = [r.greeting_ms for r in results if r.greeting_ms is not None]
    return {
        "turns_per_session": turns,
        "turns_expected": len(results) * turns,
        "turns_measured": len(latencies),
        "failed_turns": len(results) * turns - len(latencies),
        "failure_reasons": dict(Counter(f for r in results for f in r.failures)),
        "latency_ms": summary(latencies),
        "latencies_ms": [round(ms) for ms in latencies],
        "greeting_ms": summary(greetings),
    }


def per_session(total: float | None, sessions: int) -> float | None:
    return None if total is None or not sessions else round(total / sessions, 1)


def talk(
    backends: Backends,
    profile: str,
    sessions: int,
    max_sessions: int,
    turns: int,
    speech: np.ndarray,
) -> tuple[dict[str, Any], list[SessionResult]]:
    """A fresh agent, ``sessions`` clients talking to it; the figures common to every row."""
    env = agent_env(backends.speaches_url, backends.ollama_url, MAX_SESSIONS=str(max_sessions))
    with run_agent(env) as agent, TreeWatch(agent.process.pid) as watch:
        ready = watch.sample()
        others = OtherCpu(backends)
        row = Row(profile, "default", sessions, turns)
        results = asyncio.run(drive(agent.base_url, row, speech, row_limit(sessions, turns)))
        usage = watch.usage(ready, watch.sample())
        cpu = others.percent(usage["cpu_percent"])
        lines = list(agent.log_lines)
    usage["rss_mb_ready"] = round(ready.rss_bytes / MB, 1)
    usage["pss_mb_ready"] = round(ready.pss_bytes / MB, 1)
    figures = {
        "profile": profile,
        "sessions": sessions,
        "max_sessions": max_sessions,
        **turn_figures(results, turns),
        "agent_tree": usage,
        "cpu_percent_of_one_core": cpu,  # everything but the agent
        "agent": agent_log(lines),
        "agent_log": str(ARTIFACTS / f"agent-{env['AGENT_PORT']}.log"),  # run_agent writes it
        "llm_heard": heard_by_llm(backends.ollama_url),
    }
    return figures, results


def sweep_row(
    backends: Backends, profile: str, sessions: int, turns: int, speech: np.ndarray
) -> dict[str, Any]:
    figures, _ = talk(backends, profile, sessions, sessions, turns, speech)
    tree = figures["agent_tree"]
    tree["cpu_percent_per_session"] = per_session(tree["cpu_percent"], sessions)
    # What the sessions added to the agent as it was when ready, at its peak.
    tree["rss_mb_per_session"] = per_session(tree["rss_mb_peak"] - tree["rss_mb_ready"], sessions)
    tree["pss_mb_per_session"] = per_session(tree["pss_mb_peak"] - tree["pss_mb_ready"], sessions)
    return figures


def per_extra_session(rows: list[dict[str, Any]]) -> None:
    """Memory each session adds beyond one: against the same profile's 1-session row, so that
    what the first session loads once (models, libraries) is not spread over the others. The
    1-session row itself (or any row without one) is compared with the agent at ready."""
    ones = {row["profile"]: row["agent_tree"] for row in rows if row["sessions"] == 1}
    for row in rows:
        tree, sessions, one = row["agent_tree"], row["sessions"], ones.get(row["profile"])
        for kind in ("rss", "pss"):
            if sessions == 1 or one is None:
                extra = tree[f"{kind}_mb_per_session"]
            else:
                extra = per_session(tree[f"{kind}_mb_peak"] - one[f"{kind}_mb_peak"], sessions - 1)
            tree[f"{kind}_mb_per_extra_session"] = extra
        tree["extra_sessions_against"] = "ready" if sessions == 1 or one is None else "1 session"


def over_limit_row(
    backends: Backends, profile: str, asked: int, limit: int, speech: np.ndarray
) -> dict[str, Any]:
    turns = turns_for(asked)
    figures, results = talk(backends, profile, asked, limit, turns, speech)
    served = [r for r in results if r.greeting_ms is not None]
    refused = [
        r.refusal
        for r in results
        if r.refusal
        and r.refusal["status"] == 503
        and r.refusal["code"] in REFUSAL_CODES
        and isinstance(r.refusal["error"], str)
        and r.refusal["error"].strip()
    ]
    figures.update(turn_figures(served, turns))  # the served sessions' turns only
    figures.update(
        {
            "asked": asked,
            "served": len(served),
            "served_every_turn": sum(len(r.latencies_ms) == turns for r in served),
            "refused": dict(Counter(r["code"] for r in refused)),
            "refusal_words": sorted({r["error"] for r in refused}),
            # Turned down some other way (another status or code, no words), or never served.
            "other_refusals": [
                r.refusal for r in results if r.refusal and r.refusal not in refused
            ],
            "neither": sum(r.greeting_ms is None and r.refusal is None for r in results),
        }
    )
    return figures


async def silent_sessions(
    backends: Backends,
    base_url: str,
    count: int,
    speech: np.ndarray,
    watch: TreeWatch,
    secs: float,
) -> tuple[TreeSample, TreeSample, dict[str, int], list[SessionResult]]:
    """``count`` sessions connect and hear the greeting out; once all have (or failed), the
    tree is measured for ``secs`` while they stay connected and silent, and so is the CPU
    of everything else (``OtherCpu``)."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    arrived = [loop.create_future() for _ in range(count)]
    results = [SessionResult() for _ in range(count)]

    def stay_until_released(index: int) -> Callable[[], Awaitable[None]]:
        async def stay() -> None:
            arrived[index].set_result(True)
            await release.wait()

        return stay

    tasks = []
    for index, result in enumerate(results):
        task = asyncio.create_task(
            run_session(index, base_url, speech, 0, result, stay_until_released(index))
        )
        # A session that failed before it was greeted has arrived as far as it will.
        task.add_done_callback(lambda _, f=arrived[index]: f.done() or f.set_result(False))
        tasks.append(task)
    limit = count * STAGGER_SECS + CONNECT_TIMEOUT_SECS + GREETING_TIMEOUT_SECS
    try:
        await asyncio.wait_for(asyncio.gather(*arrived), limit + REPLY_END_TIMEOUT_SECS)
        start = watch.sample()
        others = OtherCpu(backends)
        await asyncio.sleep(secs)  # the measuring window itself
        end = watch.sample()
        other_cpu = others.percent(watch.usage(start, end)["cpu_percent"])
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return start, end, other_cpu, results


def idle_row(
    backends: Backends, silent: int, idle_secs: float, silent_secs: float, speech: np.ndarray
) -> dict[str, Any]:
    env = agent_env(backends.speaches_url, backends.ollama_url, MAX_SESSIONS=str(silent))
    with run_agent(env) as agent, TreeWatch(agent.process.pid) as watch:
        start = watch.sample()
        time.sleep(idle_secs)  # the measuring window itself
        idle = watch.usage(start, watch.sample())
        first, last, other_cpu, results = asyncio.run(
            silent_sessions(backends, agent.base_url, silent, speech, watch, silent_secs)
        )
        quiet = watch.usage(first, last)
    connected = sum(r.greeting_ms is not None and not r.failures for r in results)
    quiet["cpu_percent_per_session"] = per_session(
        quiet["cpu_percent"] - idle["cpu_percent"], silent
    )
    quiet["rss_mb_per_session"] = per_session(quiet["rss_mb_end"] - idle["rss_mb_end"], silent)
    quiet["pss_mb_per_session"] = per_session(quiet["pss_mb_end"] - idle["pss_mb_end"], silent)
    return {
        "idle": idle,
        "silent_sessions": silent,
        "silent_connected": connected,
        "silent": quiet,
        "silent_cpu_percent_of_one_core": other_cpu,  # everything but the agent, meanwhile
        "failure_reasons": dict(Counter(f for r in results for f in r.failures)),
        "agent_log": str(ARTIFACTS / f"agent-{env['AGENT_PORT']}.log"),
    }


# --- output ---------------------------------------------------------------------------------


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "profile",
        "sessions",
        "turns",
        "p50 ms",
        "p95 ms",
        "failed",
        "agent CPU%",
        "CPU%/session",
        "RSS MB",
        "PSS MB",
        "RSS MB/extra",
        "PSS MB/extra",
        "processes",
        "clients CPU%",
        "others CPU%",
    )
    body = []
    for row in rows:
        heard, tree, cpu = (
            row["latency_ms"] or {},
            row["agent_tree"],
            row["cpu_percent_of_one_core"],
        )
        body.append(
            tuple(
                cell(value)
                for value in (
                    row["profile"],
                    row["sessions"],
                    f"{row['turns_measured']}/{row['turns_expected']}",
                    heard.get("p50"),
                    heard.get("p95"),
                    row["failed_turns"],
                    round(tree["cpu_percent"]),
                    tree["cpu_percent_per_session"],
                    tree["rss_mb_peak"],
                    tree["pss_mb_peak"],
                    tree["rss_mb_per_extra_session"],
                    tree["pss_mb_per_extra_session"],
                    tree["processes"],
                    cpu["bench_clients"],
                    cpu["others"],
                )
            )
        )
    return markdown(head, body)


def idle_table(row: dict[str, Any]) -> str:
    head = (
        "state",
        "sessions",
        "agent CPU%",
        "CPU%/session",
        "RSS MB",
        "PSS MB",
        "RSS MB/session",
        "PSS MB/session",
        "processes",
        "clients CPU%",
        "others CPU%",
    )
    keys = (
        "cpu_percent",
        "cpu_percent_per_session",
        "rss_mb_end",
        "pss_mb_end",
        "rss_mb_per_session",
        "pss_mb_per_session",
        "processes",
    )
    silent = f"{row['silent_connected']}/{row['silent_sessions']}"
    meanwhile = row.get("silent_cpu_percent_of_one_core", {})
    body = [
        ("idle", "0", *(cell(row["idle"].get(key)) for key in keys), "-", "-"),
        (
            "connected, silent",
            silent,
            *(cell(row["silent"].get(key)) for key in keys),
            cell(meanwhile.get("bench_clients")),
            cell(meanwhile.get("others")),
        ),
    ]
    return markdown(head, body)


def over_limit_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "profile",
        "asked",
        "MAX_SESSIONS",
        "served",
        "every turn answered",
        "refused full",
        "refused busy",
        "other",
        "turns",
        "p50 ms",
        "p95 ms",
        "agent CPU%",
    )
    body = []
    for row in rows:
        heard = row["latency_ms"] or {}
        refused = sum(row["refused"].values())
        body.append(
            tuple(
                cell(value)
                for value in (
                    row["profile"],
                    row["asked"],
                    row["max_sessions"],
                    row["served"],
                    row["served_every_turn"],
                    row["refused"].get("full", 0),
                    row["refused"].get("busy", 0),
                    row["asked"] - row["served"] - refused,
                    f"{row['turns_measured']}/{row['turns_expected']}",
                    heard.get("p50"),
                    heard.get("p95"),
                    round(row["agent_tree"]["cpu_percent"]),
                )
            )
        )
    return markdown(head, body)


def print_tables(report: dict[str, Any]) -> None:
    if report["sweep"]:
        print("\nConcurrency sweep (default turn settings, MAX_SESSIONS = sessions):")
        print(sweep_table(report["sweep"]))
    if report["idle"]:
        print(f"\nIdle, then connected and silent ({report['idle']['silent']['secs']} s):")
        print(idle_table(report["idle"]))
    if report["over_limit"]:
        print("\nMore sessions asked for than MAX_SESSIONS (p50/p95 of the served sessions):")
        print(over_limit_table(report["over_limit"]))
        for words in sorted({w for row in report["over_limit"] for w in row["refusal_words"]}):
            print(f'refused with: "{words}"')
    print(
        f"\nLatency: last speech sample sent → first reply frame with RMS > {LOUD_RMS:g}, as "
        "the client hears it. 'agent' is the process run_agent started and its descendants: "
        f"CPU in % of one core ({CPUS} here); RSS and PSS summed over it, in the sweep at their "
        "peak. MB/extra: what each session beyond one added (against the profile's 1-session "
        "row; that row: against the agent at ready). Silent: CPU minus idle, and memory minus "
        "idle, per session. 'others' is every process but the agent, the stand-ins and the "
        "clients."
    )


# --- the plan and the run -------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.capacity", description=__doc__.splitlines()[0]
    )
    words = lambda text: [w for w in text.split(",") if w]  # noqa: E731
    numbers = lambda text: [int(n) for n in text.split(",") if n]  # noqa: E731
    parser.add_argument("--quick", action="store_true", help="one profile, 1,4,12 sessions")
    parser.add_argument(
        "--idle-only", action="store_true", help="only the idle row: no sweep, no over-limit row"
    )
    parser.add_argument(
        "--profiles", type=words, help=f"of {','.join(PROFILES)} (default: instant,gpu)"
    )
    parser.add_argument("--sessions", type=numbers, help="default: 1,2,4,8,12,16")
    parser.add_argument("--turns", type=int, help="per session (default: 4 at 1 session … 1)")
    parser.add_argument(
        "--silent", type=int, default=SILENT_SESSIONS, help="silent sessions; 0: no idle row"
    )
    parser.add_argument(
        "--silent-secs",
        type=float,
        dest="silent_window",
        help=f"the silent row's measuring window in s (default {SILENT_SECS:g})",
    )
    parser.add_argument(
        "--over-limit",
        default="/".join(map(str, OVER_LIMIT)),
        help="ASKED/MAX_SESSIONS for the over-limit row (default 16/12); 'none' skips it",
    )
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "bench-capacity.json")
    args = parser.parse_args(argv)
    for name in args.profiles or []:
        if name not in PROFILES:
            parser.error(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    if args.over_limit == "none":
        args.over_limit = None
    else:
        try:
            asked, limit = (int(n) for n in args.over_limit.split("/"))
        except ValueError:
            parser.error(f"--over-limit wants ASKED/MAX_SESSIONS, got {args.over_limit!r}")
        args.over_limit = (asked, limit)
    if args.idle_only:
        if args.silent <= 0:
            parser.error("--idle-only needs --silent above 0")
        args.over_limit = None
    profiles = args.profiles or list(SWEEP_PROFILES)
    args.profiles = profiles[:1] if args.quick and not args.profiles else profiles
    args.sessions = (
        []
        if args.idle_only
        else args.sessions or list(QUICK_SESSIONS if args.quick else SWEEP_SESSIONS)
    )
    args.idle_secs, args.silent_secs = (
        (QUICK_IDLE_SECS, QUICK_SILENT_SECS) if args.quick else (IDLE_SECS, SILENT_SECS)
    )
    args.silent_secs = args.silent_window or args.silent_secs
    return args


@dataclass
class Report:
    path: Path
    args: argparse.Namespace
    began: float = field(default_factory=time.monotonic)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    idle: dict[str, Any] | None = None
    over_limit: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # rows that could not run at all

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": CPUS, "platform": platform.platform()},
            "quick": self.args.quick,
            "sentence": SENTENCE,
            "reply": REPLY,
            "turn_settings": "default (the agent's own)",
            "measured": "client wall clock: last speech sample sent → first reply frame with "
            f"RMS > {LOUD_RMS:g}; agent: the process run_agent started and its descendants "
            f"(/proc, every {SCAN_EVERY_SECS} s); CPU in % of one core",
            "profiles": {name: PROFILES[name].imitates for name in self.args.profiles},
            "sweep": self.sweep,
            "idle": self.idle,
            "over_limit": self.over_limit,
            "errors": self.errors,
            "bench_secs": round(time.monotonic() - self.began),
        }

    def write(self) -> dict[str, Any]:
        report = self.as_dict()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return report

    def attempt(self, what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one row; one broken row must not lose the others."""
        try:
            figures = run()
        except Exception as error:
            self.errors.append(f"{what}: {type(error).__name__}: {error}")
            print(f"{what} could not run: {self.errors[-1]}", flush=True)
            return None
        self.write()
        return figures


def progress(what: str, row: dict[str, Any]) -> str:
    heard, tree = row.get("latency_ms") or {}, row["agent_tree"]
    return (
        f"{what}: {row['turns_measured']}/{row['turns_expected']} turns, p50 "
        f"{heard.get('p50', '-')} ms, p95 {heard.get('p95', '-')} ms, agent CPU "
        f"{tree['cpu_percent']}%, RSS {tree['rss_mb_peak']} MB, {tree['secs']} s"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    loopback_only()
    report = Report(args.out, args)
    print(
        f"profiles {','.join(args.profiles)} × sessions {','.join(map(str, args.sessions))}"
        f"; each agent's log in {ARTIFACTS}/agent-PORT.log",
        flush=True,
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        speech_job = pool.submit(prepare_speech)  # while the first stand-ins start
        for name in args.profiles:
            last = name == args.profiles[-1]
            with start_backends(PROFILES[name]) as backends:
                speech = speech_job.result()
                for sessions in args.sessions:
                    turns = args.turns or turns_for(sessions)
                    what = f"{name} {sessions} sessions"
                    figures = report.attempt(
                        what, partial(sweep_row, backends, name, sessions, turns, speech)
                    )
                    if figures:
                        report.sweep.append(figures)
                        per_extra_session(report.sweep)
                        print(progress(what, figures), flush=True)
                if last and args.silent > 0:
                    figures = report.attempt(
                        "idle",
                        partial(
                            idle_row,
                            backends,
                            args.silent,
                            args.idle_secs,
                            args.silent_secs,
                            speech,
                        ),
                    )
                    if figures:
                        report.idle = figures
                        quiet = figures["silent"]
                        print(
                            f"idle: agent CPU {figures['idle']['cpu_percent']}%, RSS "
                            f"{figures['idle']['rss_mb_end']} MB; {args.silent} silent: CPU "
                            f"{quiet['cpu_percent_per_session']}% and RSS "
                            f"{quiet['rss_mb_per_session']} MB a session; meanwhile others "
                            f"{figures['silent_cpu_percent_of_one_core']['others']}%",
                            flush=True,
                        )
                if last and args.over_limit:
                    asked, limit = args.over_limit
                    what = f"{name} {asked} asked, MAX_SESSIONS={limit}"
                    figures = report.attempt(
                        what, partial(over_limit_row, backends, name, asked, limit, speech)
                    )
                    if figures:
                        report.over_limit.append(figures)
                        print(
                            f"{progress(what, figures)}; served {figures['served']}, "
                            f"refused {figures['refused']}",
                            flush=True,
                        )
    written = report.write()
    print_tables(written)
    busy = [r for r in report.sweep if r["cpu_percent_of_one_core"]["others"] > BUSY_OTHERS]
    if busy:
        print(
            f"note: other work used more than {BUSY_OTHERS}% of a core during {len(busy)} rows: "
            "those figures are worse than this machine alone would give."
        )
    if report.errors:
        print(f"{len(report.errors)} rows could not run; see 'errors' in the JSON.")
    print(f"Figures in {args.out}; {written['bench_secs']} s in all.")


if __name__ == "__main__":
    main()
