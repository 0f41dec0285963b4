"""End of the user's speech → first reply audio, by backend speed class and session count.

    python -m tests.bench.latency            # the default plan, about 6½ minutes on 2 cores
    python -m tests.bench.latency --quick    # 4 rows, about a minute

For each profile the stand-ins start with that profile's speed settings. For each row
(turn settings × sessions) a fresh agent runs with MAX_SESSIONS = sessions; that many
aiortc clients connect a little apart, hear the greeting, then each say one sentence a few
times, waiting for the whole reply each time. A turn's latency is what the client hears:
from the wall-clock time its last speech sample went out to the first loud frame of the
reply. The agent's own figure (its "turn" log lines: latency_ms and parts_ms) is collected
beside it, and the CPU time of every process is read from /proc. Figures are printed and
written to test-artifacts/bench.json; nothing here asserts a goal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.audio import LOUD_RMS, pad_with_silence, synthesize, trim_silence
from tests.bench.turn_settings import TURN_SETTINGS
from tests.helpers import (
    ARTIFACTS,
    LLM_MODEL,
    agent_env,
    chat_requests,
    clear_standin_requests,
    run_agent,
)
from tests.standins.process import start_standin
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

SENTENCE = "Please turn on the kitchen lights."  # what the clients say (1.6 s of speech)
HEARD = "Please turn on the kitchen lights."  # what the fixed-text STT answers
REPLY = "Okay, the kitchen lights are on now."  # every LLM answer, the greeting too (2.1 s)

QUIET_SECS = 0.6  # a reply is over once this much quiet follows it
STAGGER_SECS = 0.3  # between session starts: a dozen people do not all speak at once
CONNECT_TIMEOUT_SECS = 30.0
GREETING_TIMEOUT_SECS = 40.0
TURN_TIMEOUT_SECS = 20.0  # no reply audio by then: the turn failed
REPLY_END_TIMEOUT_SECS = 30.0
RELEASE_TIMEOUT_SECS = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CPUS = os.cpu_count() or 1
BUSY_OTHERS = 25  # % of a core used by unrelated processes above which a row is flagged


@dataclass(frozen=True)
class Profile:
    name: str
    imitates: str
    speaches: tuple[str, ...]  # stand-in flags
    ollama: tuple[str, ...]


def _fixed_speaches(stt_ms: int, tts_ms: int) -> tuple[str, ...]:
    """Speaches without engine time: a fixed transcript, replayed speech, set delays."""
    return (
        *("--stt-fixed-text", HEARD, "--stt-delay-ms", str(stt_ms)),
        *("--tts-cache", "--tts-delay-ms", str(tts_ms), "--warm"),
    )


PROFILES = {
    profile.name: profile
    for profile in (
        Profile(
            "instant",
            "backends that answer at once: STT, LLM and TTS first audio ≈ 0 ms",
            _fixed_speaches(0, 0),
            ("--ttfb-ms", "0", "--tokens-per-sec", "0"),
        ),
        Profile(
            "gpu",
            "GPU-class backends: STT 80 ms, LLM first token 150 ms then 60 tokens/s, "
            "TTS first audio 80 ms",
            _fixed_speaches(80, 80),
            ("--ttfb-ms", "150", "--tokens-per-sec", "60"),
        ),
        Profile(
            "cpu-real",
            "this machine's CPU: real Whisper tiny.en and Piper in the Speaches stand-in, "
            "LLM first token 300 ms then 20 tokens/s",
            ("--warm",),
            ("--ttfb-ms", "300", "--tokens-per-sec", "20"),
        ),
    )
}


# The turn settings of the default plan; --turn-settings picks any of TURN_SETTINGS.
PLANNED_TURNS = ("default", "fast")


@dataclass(frozen=True)
class Row:
    profile: str
    turn: str
    sessions: int
    turns: int  # per session


QUICK = (
    Row("instant", "fast", 1, 2),
    Row("instant", "default", 1, 2),
    Row("gpu", "fast", 4, 2),
    Row("cpu-real", "default", 1, 2),
)


def turns_for(sessions: int) -> int:
    """Turns per session: enough figures per row, yet every row over in about 20 s."""
    return 3 if sessions == 1 else 2 if sessions <= 4 else 1


def plan(args: argparse.Namespace) -> list[Row]:
    """The rows to run: --quick's few, the default plan, or the sessions asked for."""
    if args.quick:
        rows = list(QUICK)
    elif args.sessions:
        rows = [
            Row(profile, turn, sessions, turns_for(sessions))
            for profile in PROFILES
            for turn in args.turn_settings or PLANNED_TURNS
            for sessions in args.sessions
        ]
    else:
        # At 12 sessions the turn settings no longer matter (see README): fast only there.
        rows = [
            Row(profile, turn, sessions, turns_for(sessions))
            for profile in PROFILES
            for turn in args.turn_settings or PLANNED_TURNS
            for sessions in (1, 4, 12)
            if turn == "fast" or sessions < 12
        ]
    return [
        replace(row, turns=args.turns or row.turns)
        for row in rows
        if (not args.profiles or row.profile in args.profiles)
        and (not args.turn_settings or row.turn in args.turn_settings)
        and (not args.sessions or row.sessions in args.sessions)
    ]


# --- one client ---------------------------------------------------------------------------


async def reply_over(client: VoiceClient, start: float, replies: int) -> None:
    """Wait until the agent says reply number ``replies`` is spoken, and it sounds so.

    Silence alone is not enough: an overloaded agent's reply arrives with gaps, and a
    client that took a gap for the end would talk over the rest and time that instead.
    """
    await client.wait_for_count("bot-stopped-speaking", replies, REPLY_END_TIMEOUT_SECS)
    await client.wait_for_silence_after_speech(start, QUIET_SECS, REPLY_END_TIMEOUT_SECS)


@dataclass
class SessionResult:
    latencies_ms: list[float] = field(default_factory=list)
    greeting_ms: float | None = None  # request for a session → first greeting audio
    failures: list[str] = field(default_factory=list)
    refusal: dict[str, Any] | None = None  # the agent's answer to an offer it turned down


def refusal(response: httpx.Response) -> dict[str, Any]:
    """What an agent said when it turned a session down: status, and its JSON code and words."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return {"status": response.status_code, "code": None, "error": None}
    return {"status": response.status_code, "code": body.get("code"), "error": body.get("error")}


async def run_session(
    index: int,
    base_url: str,
    speech: np.ndarray,
    turns: int,
    result: SessionResult,
    stay: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Connect, hear the greeting out, say ``speech`` ``turns`` times; then, if given, stay
    connected (silent) until ``stay()`` returns."""
    await asyncio.sleep(index * STAGGER_SECS)  # arrivals spread on purpose, not a wait
    client = VoiceClient(base_url)
    stage = "connect"
    try:
        started = time.time()
        await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_SECS)
        stage = "greeting"
        onset = await client.wait_for_sound(started, GREETING_TIMEOUT_SECS)
        result.greeting_ms = (onset - started) * 1000
        await reply_over(client, started, 1)
        for turn in range(1, turns + 1):
            stage = f"turn {turn}"
            spoke_until = await client.microphone.say(speech)
            onset = await client.wait_for_sound(spoke_until, TURN_TIMEOUT_SECS)
            result.latencies_ms.append((onset - spoke_until) * 1000)
            await reply_over(client, spoke_until, 1 + turn)
        if stay is not None:
            stage = "staying connected"
            await stay()
    except asyncio.CancelledError:
        result.failures.append(f"{stage}: the row's time limit")
        raise
    except httpx.HTTPStatusError as error:  # the offer was turned down
        result.refusal = refusal(error.response)
        words = f"{result.refusal['status']} {result.refusal['code']}: {result.refusal['error']}"
        result.failures.append(f"{stage}: HTTP {words}"[:200])
    except Exception as error:
        result.failures.append(f"{stage}: {type(error).__name__}: {error}"[:200])
    finally:
        await client.close()


async def drive(
    base_url: str, row: Row, speech: np.ndarray, limit: float | None = None
) -> list[SessionResult]:
    """Run the row's sessions at once; any still going after ``limit`` seconds are cancelled."""
    results = [SessionResult() for _ in range(row.sessions)]
    tasks = [
        asyncio.create_task(run_session(i, base_url, speech, row.turns, result))
        for i, result in enumerate(results)
    ]
    if limit is None:  # a backstop only: every wait inside a session has its own limit
        limit = row.sessions * STAGGER_SECS + CONNECT_TIMEOUT_SECS + GREETING_TIMEOUT_SECS
        limit += row.turns * (TURN_TIMEOUT_SECS + 10)
    _, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results


# --- processes, logs and figures ------------------------------------------------------------


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    ppid: int
    started: int  # clock ticks after boot: with the pid, names a process though pids are reused
    cpu_secs: float  # user + system, all threads
    rss_bytes: int


def read_stat(pid: int) -> ProcessStat | None:
    """/proc/PID/stat, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in brackets may hold spaces
    return ProcessStat(
        pid=pid,
        ppid=int(fields[1]),
        started=int(fields[19]),
        cpu_secs=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        rss_bytes=int(fields[21]) * PAGE_BYTES,
    )


def process_tree(root: int) -> list[ProcessStat]:
    """``root`` and all its descendants alive now (empty if ``root`` is gone)."""
    children: dict[int, list[ProcessStat]] = {}
    found: dict[int, ProcessStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := read_stat(int(name))):
            found[stat.pid] = stat
            children.setdefault(stat.ppid, []).append(stat)
    tree, todo = [], [found[root]] if root in found else []
    while todo:
        stat = todo.pop()
        tree.append(stat)
        todo.extend(children.get(stat.pid, []))
    return tree


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90, p95 = np.percentile(values, [50, 90, 95])
    return {
        "p50": round(float(p50)),
        "p90": round(float(p90)),
        "p95": round(float(p95)),
        "max": round(max(values)),
        "min": round(min(values)),
    }


def agent_log(lines: list[str]) -> dict[str, Any]:
    """The agent's turn figures, how its sessions ended, and whatever it warned about."""
    turns, greetings, ended, problems = [], [], Counter(), Counter()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            problems[f"not JSON: {line.strip()[:120]}"] += 1
            continue
        event = entry.get("event")
        if event == "turn":
            turns.append(entry)
        elif event == "greeting":
            greetings.append(entry["latency_ms"])
        elif event == "session ended":
            ended[entry.get("reason", "?")] += 1
        if entry.get("level") in ("warning", "error", "critical"):
            problems[f"{entry['level']}: {str(event)[:160]}"] += 1
    keys = sorted({key for turn in turns for key in turn.get("parts_ms", {})})
    parts = {
        key: round(statistics.median(turn["parts_ms"].get(key, 0) for turn in turns))
        for key in keys
    }
    return {
        "latency_ms": summary([turn["latency_ms"] for turn in turns]),
        "turns": len(turns),
        "parts_ms_median": parts,
        "greeting_ms": summary(greetings),
        "sessions_ended": dict(ended),
        "problems": dict(problems),
    }


def wait_released(base_url: str, timeout: float) -> tuple[int, float]:
    """Poll the agent's /health until no session is left: (sessions left, seconds waited)."""
    started = time.monotonic()
    active = -1
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            active = httpx.get(f"{base_url}/health", timeout=2).json()["sessions"]["active"]
            if active == 0:
                break
        time.sleep(0.1)  # polling another process's state, as helpers.wait_for_health does
    return active, round(time.monotonic() - started, 1)


def heard_by_llm(ollama_url: str) -> dict[str, int]:
    """What the LLM was given as the user's words, counted (then the stand-in's log cleared)."""
    chats = chat_requests(ollama_url)
    clear_standin_requests(ollama_url)
    heard = Counter()
    for chat in chats:
        users = [m.get("content") for m in chat.get("messages", []) if m.get("role") == "user"]
        if users:
            heard[str(users[-1]).strip()] += 1
    return dict(heard.most_common(5))


@dataclass
class Backends:
    speaches_url: str
    ollama_url: str
    pids: dict[str, int]


@contextlib.contextmanager
def start_backends(profile: Profile) -> Iterator[Backends]:
    """Both stand-ins with the profile's speed settings, stopped on exit."""
    speaches_args = ("--installed-all", *profile.speaches)
    ollama_args = ("--installed", LLM_MODEL, "--reply", REPLY, *profile.ollama)
    with (
        start_standin("tests.standins.speaches", *speaches_args) as (speaches, s_url),
        start_standin("tests.standins.ollama", *ollama_args) as (ollama, o_url),
    ):
        yield Backends(s_url, o_url, {"speaches": speaches.pid, "ollama": ollama.pid})


def run_row(row: Row, backends: Backends, speech: np.ndarray) -> dict[str, Any]:
    settings = TURN_SETTINGS[row.turn]
    env = agent_env(
        backends.speaches_url,
        backends.ollama_url,
        MAX_SESSIONS=str(row.sessions),
        **dict(settings.env),
    )
    with run_agent(env) as agent:
        pids = {**backends.pids, "bench_clients": os.getpid()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        # The agent is a supervisor and its workers: its CPU is the tree's.
        agent_before = {s.pid: s.cpu_secs for s in process_tree(agent.process.pid)}
        loop_before = {pid: cpu_seconds(pid, thread=pid) for pid in agent_before}
        busy_before, total_before = machine_ticks()
        started = time.monotonic()
        results = asyncio.run(drive(agent.base_url, row, speech))
        wall = time.monotonic() - started
        cpu = {
            name: round(100 * (cpu_seconds(pid) - cpu_before[name]) / wall)
            for name, pid in pids.items()
        }
        agent_after = {s.pid: s.cpu_secs for s in process_tree(agent.process.pid)}
        used = sum(secs - agent_before.get(pid, 0.0) for pid, secs in agent_after.items())
        cpu["agent"] = round(100 * used / wall)
        busy_after, total_after = machine_ticks()
        # The busiest event loop (each process's main thread): near 100% it is saturated.
        loop = max(cpu_seconds(pid, thread=pid) - loop_before.get(pid, 0.0) for pid in agent_after)
        machine = 100 * (busy_after - busy_before) / (total_after - total_before)
        # Anything else running here (another test run, say) distorts the figures: say so.
        cpu["others"] = max(0, round(machine * CPUS - sum(cpu.values())))
        cpu["machine"] = round(machine)
        cpu["agent_main_thread"] = round(100 * loop / wall)
        left, release_secs = wait_released(agent.base_url, RELEASE_TIMEOUT_SECS)
        lines = list(agent.log_lines)
    latencies = [ms for result in results for ms in result.latencies_ms]
    failures = Counter(reason for result in results for reason in result.failures)
    expected = row.sessions * row.turns
    greetings = [r.greeting_ms for r in results if r.greeting_ms is not None]
    return {
        "profile": row.profile,
        "turn_settings": row.turn,
        "turn_env": dict(settings.env),
        "sessions": row.sessions,
        "turns_per_session": row.turns,
        "turns_expected": expected,
        "turns_measured": len(latencies),
        "failures": expected - len(latencies),
        "failure_reasons": dict(failures),
        "latency_ms": summary(latencies),
        "latencies_ms": [round(ms) for ms in latencies],
        "greeting_ms": summary(greetings),
        "agent": agent_log(lines),
        "cpu_percent_of_one_core": cpu,
        "wall_secs": round(wall, 1),
        "sessions_left_after_close": left,
        "release_secs": release_secs,  # last client closed → /health shows no session
        "agent_log": str(ARTIFACTS / f"agent-{env['AGENT_PORT']}.log"),  # run_agent writes it
        "llm_heard": heard_by_llm(backends.ollama_url),
    }


# --- output ------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "profile",
        "turn settings",
        "sessions",
        "turns",
        "p50 ms",
        "p90 ms",
        "max ms",
        "agent p50",
        "failures",
        "greeting p50",
        "agent CPU%",
        "agent loop%",
        "others CPU%",
    )
    body = []
    for row in rows:
        heard, own = row["latency_ms"] or {}, row["agent"]["latency_ms"] or {}
        cpu = row["cpu_percent_of_one_core"]
        body.append(
            (
                row["profile"],
                row["turn_settings"],
                str(row["sessions"]),
                f"{row['turns_measured']}/{row['turns_expected']}",
                str(heard.get("p50", "-")),
                str(heard.get("p90", "-")),
                str(heard.get("max", "-")),
                str(own.get("p50", "-")),
                str(row["failures"]),
                str((row["greeting_ms"] or {}).get("p50", "-")),
                str(cpu["agent"]),
                str(cpu["agent_main_thread"]),
                str(cpu["others"]),
            )
        )
    return markdown(head, body)


# The parts of the agent's figure in the order they happen (Pipecat's keys).
PARTS_ORDER = (
    "endpointing_wait",
    "transcription",
    "turn_detection",
    "llm_inference",
    "sentence_aggregation",
    "speech_synthesis",
    "output_transport",
    "pipeline",
)


def parts_table(rows: list[dict[str, Any]]) -> str:
    found = {k for row in rows for k in row["agent"]["parts_ms_median"]}
    keys = [k for k in PARTS_ORDER if k in found] + sorted(found - set(PARTS_ORDER))
    head = ("profile", "turn settings", "sessions", *keys)
    body = [
        (
            row["profile"],
            row["turn_settings"],
            str(row["sessions"]),
            *(str(row["agent"]["parts_ms_median"].get(k, "-")) for k in keys),
        )
        for row in rows
    ]
    return markdown(head, body)


def markdown(head: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(cells[i]) for cells in (head, *body)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(head), rule, *(line(cells) for cells in body)])


def prepare_speech() -> np.ndarray:
    """The sentence at 48 kHz, trimmed so that the end of speech is the end of voice."""
    samples = trim_silence(synthesize(SENTENCE, SAMPLE_RATE), level=100)
    return pad_with_silence(samples, SAMPLE_RATE, 0.3, 0.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="4 rows, about a minute")
    words = lambda text: [w for w in text.split(",") if w]  # noqa: E731
    numbers = lambda text: [int(n) for n in text.split(",") if n]  # noqa: E731
    parser.add_argument("--profiles", type=words, help=f"subset of {','.join(PROFILES)}")
    parser.add_argument("--turn-settings", type=words, help=f"subset of {','.join(TURN_SETTINGS)}")
    parser.add_argument("--sessions", type=numbers, help="e.g. 1,4,12")
    parser.add_argument("--turns", type=int, help="per session (default: 3, 2 or 1 by sessions)")
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "bench.json")
    args = parser.parse_args(argv)
    for name in args.profiles or []:
        if name not in PROFILES:
            parser.error(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    for name in args.turn_settings or []:
        if name not in TURN_SETTINGS:
            parser.error(f"unknown turn settings {name!r}; known: {', '.join(TURN_SETTINGS)}")
    return args


def write_report(path: Path, quick: bool, rows: list[dict], errors: list[str], secs: float) -> None:
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": CPUS, "platform": platform.platform()},
        "quick": quick,
        "sentence": SENTENCE,
        "reply": REPLY,
        "measured": "client wall clock: last speech sample sent → first reply frame with "
        f"RMS > {LOUD_RMS:g}; agent: its 'turn' log lines",
        "profiles": {
            p.name: {"imitates": p.imitates, "speaches": p.speaches, "ollama": p.ollama}
            for p in PROFILES.values()
        },
        "turn_settings": {t.name: t.label for t in TURN_SETTINGS.values()},
        "rows": rows,
        "errors": errors,  # rows that could not run at all
        "bench_secs": round(secs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = plan(args)
    loopback_only()
    figures: list[dict[str, Any]] = []
    errors: list[str] = []
    began = time.monotonic()
    print(f"{len(rows)} rows; each agent's log in {ARTIFACTS}/agent-PORT.log", flush=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        speech_job = pool.submit(prepare_speech)  # while the first stand-ins start
        for name in dict.fromkeys(row.profile for row in rows):
            with start_backends(PROFILES[name]) as backends:
                speech = speech_job.result()
                for row in (row for row in rows if row.profile == name):
                    try:
                        figure = run_row(row, backends, speech)
                    except Exception as error:  # one broken row must not lose the others
                        errors.append(f"{row}: {type(error).__name__}: {error}")
                        print(f"{row} could not run: {errors[-1]}", flush=True)
                        continue
                    figures.append(figure)
                    print(progress_line(figure), flush=True)
                    write_report(args.out, args.quick, figures, errors, time.monotonic() - began)
    secs = time.monotonic() - began
    write_report(args.out, args.quick, figures, errors, secs)
    print()
    print(table(figures))
    print()
    print("Median parts of the agent's own latency (ms), from its 'turn' log lines:")
    print(parts_table(figures))
    print()
    for settings in TURN_SETTINGS.values():
        print(f"turn settings {settings.name}: {settings.label}")
    print(
        f"CPU% is of one core ({CPUS} here). 'others' is every process but the agent, the "
        "stand-ins and this one: other work on the machine that distorts the figures."
    )
    busy = [row for row in figures if row["cpu_percent_of_one_core"]["others"] > BUSY_OTHERS]
    if busy:
        print(
            f"note: other work used more than {BUSY_OTHERS}% of a core during {len(busy)} of "
            f"{len(figures)} rows: those figures are worse than this machine alone would give."
        )
    if errors:
        print(f"{len(errors)} rows could not run; see 'errors' in the JSON.")
    print(f"Figures in {args.out}; {round(secs)} s in all.")


def progress_line(row: dict[str, Any]) -> str:
    heard = row["latency_ms"] or {}
    problems = sum(row["agent"]["problems"].values())
    cpu = row["cpu_percent_of_one_core"]
    return (
        f"{row['profile']:>8} {row['turn_settings']:>7} {row['sessions']:>2} sessions: "
        f"{row['turns_measured']}/{row['turns_expected']} turns "
        f"(the agent logged {row['agent']['turns']}), p50 {heard.get('p50', '-')} ms, "
        f"max {heard.get('max', '-')} ms, CPU agent {cpu['agent']}% others {cpu['others']}%, "
        f"{problems} log warnings, {row['wall_secs']} s"
    )


if __name__ == "__main__":
    main()
