"""The pause set: hesitating speakers cut off, and the wait after a finished sentence.

    python -m tests.bench.pauses                  # default settings, 42 turns, about 4 minutes
    python -m tests.bench.pauses --quick          # 10 turns, about a minute
    python -m tests.bench.pauses --turn-settings default,fast,smart-turn,silence-0.6
    python -m tests.bench.pauses --env TURN_SILENCE_SECS=0.3 --env VAD_STOP_SECS=0.1

One aiortc client talks to a fresh agent per row: it says 22 sentences with a hesitation
of 300-1000 ms in the middle and 20 said in one go (tests/pause_set.py), taking turns, each
time waiting for the whole reply. The Speaches stand-in transcribes with real Whisper
tiny.en and replays cached Piper speech; the Ollama stand-in answers every turn at once
with the same short reply. A turn is cut off when reply audio is heard before the last
sample of the sentence went out, or when the sentence did not reach the conversation as
one user message holding all of it (judged from the history of the last chat request,
after a typed marker turn, so that withdrawn speculative requests do not count). Printed,
and written to test-artifacts/pauses.json; nothing here asserts a goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tests.audio import LOUD_RMS
from tests.bench.turn_settings import TURN_SETTINGS, TurnSettings, ad_hoc
from tests.helpers import (
    ARTIFACTS,
    LLM_MODEL,
    agent_env,
    chat_requests,
    clear_standin_requests,
    run_agent,
    wait_until,
)
from tests.pause_set import (
    COMPLETE,
    PAUSED,
    Utterance,
    conversation_before,
    judge,
    session_order,
    speech_for,
)
from tests.standins.process import start_standin
from tests.webrtc_client import VoiceClient, loopback_only

REPLY = "Okay, got it."  # every LLM answer, the greeting too (about 0.8 s of speech)
MARKER = "That is all for now."  # typed after the last sentence: one more chat request
QUICK = (6, 4)  # paused and complete sentences with --quick

QUIET_SECS = 0.5  # a reply is over once this much quiet follows it
CONNECT_TIMEOUT_SECS = 30.0
GREETING_TIMEOUT_SECS = 40.0
TURN_TIMEOUT_SECS = 15.0  # no reply audio this long after the sentence: the turn failed
REPLY_END_TIMEOUT_SECS = 30.0
MARKER_TIMEOUT_SECS = 20.0


@dataclass
class Turn:
    """What the client saw of one utterance."""

    index: int  # in the session's order
    started: float = 0.0  # wall time the client began to send it (the lead silence first)
    spoke_until: float = 0.0  # wall time its last sample went out
    heard_early_ms: float | None = None  # reply audio this long before spoke_until
    wait_ms: float | None = None  # spoke_until → first reply audio after it
    transcripts: list[str] = field(default_factory=list)  # the agent's, segment by segment
    failure: str | None = None


class Transcripts:
    """The agent's transcript of each speech segment (RTVI ``user-transcription``), with
    the wall time each arrived."""

    def __init__(self, client: VoiceClient) -> None:
        self.arrived: list[tuple[float, str]] = []
        assert client.channel is not None, "connect the client first"
        client.channel.on("message", self._on_message)

    def _on_message(self, raw: str) -> None:
        message = json.loads(raw)
        data = message.get("data") or {}
        if message.get("type") == "user-transcription" and data.get("final"):
            self.arrived.append((time.time(), str(data.get("text", ""))))

    def between(self, start: float, end: float) -> list[str]:
        return [text for at, text in self.arrived if start <= at <= end]


async def reply_over(client: VoiceClient, onset: float) -> None:
    """Wait until the reply that began at ``onset`` is spoken and quiet follows.

    The agent says it started speaking before its audio arrives here, so the reply heard at
    ``onset`` is already counted among the starts: wait for as many stops."""
    starts = max(client.counts["bot-started-speaking"], client.counts["bot-stopped-speaking"] + 1)
    await client.wait_for_count("bot-stopped-speaking", starts, REPLY_END_TIMEOUT_SECS)
    await client.wait_for_silence_after_speech(onset, QUIET_SECS, REPLY_END_TIMEOUT_SECS)


async def say(client: VoiceClient, speech: np.ndarray, turn: Turn) -> None:
    turn.started = time.time()
    turn.spoke_until = await client.microphone.say(speech)
    early = client.recording.first_sound_after(turn.started)
    if early is not None and early < turn.spoke_until:
        turn.heard_early_ms = (turn.spoke_until - early) * 1000
    try:
        onset = await client.wait_for_sound(turn.spoke_until, TURN_TIMEOUT_SECS)
    except TimeoutError:
        turn.failure = f"no reply audio within {TURN_TIMEOUT_SECS:g} s"
        return
    turn.wait_ms = (onset - turn.spoke_until) * 1000
    try:
        await reply_over(client, onset)
    except TimeoutError as error:
        turn.failure = f"the reply did not end: {error}"


async def converse(
    base_url: str, ollama_url: str, order: list[Utterance], speech: dict[Utterance, np.ndarray]
) -> list[Turn]:
    """Say every utterance in turn, then type the marker and wait for its chat request."""
    client = VoiceClient(base_url)
    turns = [Turn(index) for index in range(len(order))]
    try:
        connected = time.time()
        await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_SECS)
        transcripts = Transcripts(client)
        greeting = await client.wait_for_sound(connected, GREETING_TIMEOUT_SECS)
        await reply_over(client, greeting)
        for turn, utterance in zip(turns, order, strict=True):
            await say(client, speech[utterance], turn)
            turn.transcripts = transcripts.between(turn.started, time.time())
            if turn.failure:
                print(f"  turn {turn.index + 1} failed: {turn.failure}", flush=True)
        client.send_text(MARKER, run_immediately=True, audio_response=False)
        await asyncio.to_thread(
            wait_until,
            lambda: conversation_before(MARKER, chat_requests(ollama_url)) is not None,
            MARKER_TIMEOUT_SECS,
            "the chat request of the typed marker",
        )
    finally:
        await client.close()
    return turns


# --- one row ---------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, int] | None:
    if not values:
        return None
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50)), "p95": round(float(p95)), "n": len(values)}


def ending(text: str) -> str:
    """How a transcript ends: its last punctuation mark, or 'none'."""
    stripped = text.rstrip()
    if stripped.endswith(("...", "…")):
        return "…"
    return stripped[-1] if stripped and stripped[-1] in ".?!,;:-" else "none"


def run_row(
    settings: TurnSettings,
    urls: tuple[str, str],
    order: list[Utterance],
    speech: dict[Utterance, np.ndarray],
) -> dict[str, Any]:
    speaches_url, ollama_url = urls
    clear_standin_requests(ollama_url, speaches_url)
    env = agent_env(speaches_url, ollama_url, **dict(settings.env))
    began = time.monotonic()
    with run_agent(env) as agent:
        turns = asyncio.run(converse(agent.base_url, ollama_url, order, speech))
    wall = time.monotonic() - began
    requests = chat_requests(ollama_url)
    said = conversation_before(MARKER, requests) or []
    verdicts = judge(order, said, [turn.heard_early_ms for turn in turns])
    records = []
    for turn, utterance, verdict in zip(turns, order, verdicts, strict=True):
        records.append(
            {
                "text": utterance.text,
                "paused": utterance.paused,
                "pause_ms": utterance.pause_ms,
                "cut_off": verdict.cut_off,
                "one_whole_message": verdict.whole,
                "reasons": verdict.reasons,
                "heard_early_ms": round(turn.heard_early_ms) if turn.heard_early_ms else None,
                "wait_ms": round(turn.wait_ms) if turn.wait_ms is not None else None,
                "transcripts": turn.transcripts,
                "in_conversation": list(verdict.messages),
                "failure": turn.failure,
            }
        )

    def figures(paused: bool) -> dict[str, Any]:
        mine = [r for r in records if r["paused"] == paused]
        # The wait after a finished sentence, for sentences answered as said: after a
        # cut-off, the reply heard is an answer to a part, or the rest of an early one.
        waits = [r["wait_ms"] for r in mine if r["wait_ms"] is not None and not r["cut_off"]]
        return {
            "said": len(mine),
            "cut_off": sum(r["cut_off"] for r in mine),
            "heard_early": sum(r["heard_early_ms"] is not None for r in mine),
            "not_one_whole_message": sum(not r["one_whole_message"] for r in mine),
            "failed": sum(r["failure"] is not None for r in mine),
            "wait_ms": percentiles(waits),
        }

    first_halves = [r["transcripts"][0] for r in records if r["paused"] and r["transcripts"]]
    return {
        "turn_settings": settings.name,
        "label": settings.label,
        "turn_env": dict(settings.env),
        "paused": figures(True),
        "complete": figures(False),
        "failed": sum(r["failure"] is not None for r in records),
        "first_half_endings": dict(Counter(ending(text) for text in first_halves)),
        "chat_requests": len(requests),  # speculative ones included
        "user_messages_in_conversation": len(said),
        "wall_secs": round(wall, 1),
        "agent_log": str(ARTIFACTS / f"agent-{env['AGENT_PORT']}.log"),  # run_agent writes it
        "utterances": records,
    }


# --- output ----------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "turn settings",
        "cut off: paused",
        "cut off: complete",
        "wait after complete p50 / p95 ms",
        "wait after paused p50 / p95 ms",
        "failed",
    )

    def wait(figures: dict[str, Any]) -> str:
        found = figures["wait_ms"]
        return f"{found['p50']} / {found['p95']}" if found else "-"

    body = [
        (
            row["turn_settings"],
            f"{row['paused']['cut_off']}/{row['paused']['said']}",
            f"{row['complete']['cut_off']}/{row['complete']['said']}",
            wait(row["complete"]),
            wait(row["paused"]),
            str(row["failed"]),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in (head, *body)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(head), rule, *(line(cells) for cells in body)])


def progress_line(row: dict[str, Any]) -> str:
    paused, complete = row["paused"], row["complete"]
    return (
        f"{row['turn_settings']}: cut off {paused['cut_off']}/{paused['said']} paused "
        f"({paused['heard_early']} heard early, {paused['not_one_whole_message']} not one whole "
        f"message), {complete['cut_off']}/{complete['said']} complete; {row['failed']} failed; "
        f"{row['chat_requests']} chat requests; {row['wall_secs']} s"
    )


def print_details(row: dict[str, Any]) -> None:
    for record in row["utterances"]:
        if record["cut_off"] or record["failure"]:
            why = "; ".join(record["reasons"] + ([record["failure"]] if record["failure"] else []))
            print(f"  {record['text']!r} ({record['pause_ms']} ms): {why}")
            print(f"    in the conversation: {record['in_conversation']}")


def write_report(
    path: Path, args: argparse.Namespace, rows: list[dict], errors: list[str], secs: float
) -> None:
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "quick": args.quick,
        "reply": REPLY,
        "marker": MARKER,
        "measured": "client wall clock: last speech sample sent → first reply frame with "
        f"RMS > {LOUD_RMS:g}; conversation: user messages of the marker's chat request",
        "utterances": [asdict(u) for u in args.order],
        "rows": rows,
        "errors": errors,  # rows that could not run at all
        "bench_secs": round(secs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.pauses", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK[0]} paused and {QUICK[1]} complete sentences"
    )
    parser.add_argument(
        "--turn-settings",
        type=lambda text: [w for w in text.split(",") if w],
        help=f"comma-separated, of {','.join(TURN_SETTINGS)} (default: default)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="repeatable: one more row, 'custom', with these settings for the agent",
    )
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "pauses.json")
    args = parser.parse_args(argv)
    names = args.turn_settings or ([] if args.env else ["default"])
    for name in names:
        if name not in TURN_SETTINGS:
            parser.error(f"unknown turn settings {name!r}; known: {', '.join(TURN_SETTINGS)}")
    args.rows = [TURN_SETTINGS[name] for name in names]
    if args.env:
        try:
            args.rows.append(ad_hoc(args.env))
        except ValueError as error:
            parser.error(str(error))
    args.order = session_order(*QUICK) if args.quick else session_order()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    loopback_only()
    began = time.monotonic()
    paused = sum(u.paused for u in args.order)
    print(
        f"{len(args.rows)} rows of {paused} paused and {len(args.order) - paused} complete "
        f"sentences (of {len(PAUSED)} and {len(COMPLETE)}); agent logs in {ARTIFACTS}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    speaches_args = ("--installed-all", "--warm", "--stt-serial", "--tts-cache")
    ollama_args = ("--installed", LLM_MODEL, "--reply", REPLY)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Synthesised once per run, while the stand-ins load their engines.
        speech_job = pool.submit(lambda: {u: speech_for(u) for u in args.order})
        with (
            start_standin("tests.standins.speaches", *speaches_args) as (_, speaches_url),
            start_standin("tests.standins.ollama", *ollama_args) as (_, ollama_url),
        ):
            speech = speech_job.result()
            for settings in args.rows:
                try:
                    rows.append(run_row(settings, (speaches_url, ollama_url), args.order, speech))
                except Exception as error:  # one broken row must not lose the others
                    errors.append(f"{settings.name}: {type(error).__name__}: {error}")
                    print(f"{settings.name} could not run: {errors[-1]}", flush=True)
                    continue
                print(progress_line(rows[-1]), flush=True)
                print_details(rows[-1])
                write_report(args.out, args, rows, errors, time.monotonic() - began)
    secs = time.monotonic() - began
    write_report(args.out, args, rows, errors, secs)
    print()
    print(table(rows))
    print()
    for settings in args.rows:
        print(f"turn settings {settings.name}: {settings.label}")
    for row in rows:
        print(
            f"\nWhisper tiny.en's first halves under {row['turn_settings']} (the agent's transcript"
            f" of each segment; endings {row['first_half_endings']}):"
        )
        for record in row["utterances"]:
            if record["paused"]:
                print(f"  {record['pause_ms']:>4} ms  {' | '.join(record['transcripts'])}")
    print(
        "\nA cut-off: reply audio heard before the sentence ended, or the sentence not in the "
        "conversation as one whole user message. Waits: end of speech → first reply audio, "
        f"sentences not cut off. Details in {args.out}; {round(secs)} s in all."
    )


if __name__ == "__main__":
    main()
