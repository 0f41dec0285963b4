"""Sentences split in two on a busy CPU-only server, at 1, 2 and 4 calls at once.

    python -m tests.bench.splits            # 1, 2 and 4 calls, 2 sentences each (about 2 min)
    python -m tests.bench.splits --quick    # 1 and 2 calls, 1 sentence each

The Speaches stand-in runs real Whisper tiny.en and, like the real Speaches on two cores,
transcribes one request at a time, so with several calls a segment's transcript comes
late. Every call says sentences with a 0.4 s comma pause in the middle ("My train leaves
at eight thirty, … how long until then?": two segments) at the same moment as the others,
and waits for the whole reply. A sentence counts as split unless it reached the LLM exactly once, in
one turn with both halves. The goal is 0; nothing here asserts it. Printed, and written to
test-artifacts/splits.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from tests.helpers import (
    ARTIFACTS,
    LLM_MODEL,
    agent_env,
    chat_requests,
    clear_standin_requests,
    run_agent,
    standin_requests,
)
from tests.paused_speech import not_answered_whole, sentence_with_a_pause, user_words
from tests.standins.process import start_standin
from tests.webrtc_client import VoiceClient, loopback_only

REPLY_TIMEOUT_SECS = 90.0


def spoken_index(call: int, turn: int) -> int:
    """Which sentence a call says at a turn: at once, the calls say different ones."""
    return call + turn


async def one_call(
    base_url: str, index: int, sentences: int, start: asyncio.Barrier
) -> list[float]:
    """Say ``sentences`` paused sentences; returns end of speech → end of reply, in seconds."""
    client = VoiceClient(base_url)
    waits = []
    try:
        await client.connect()
        await client.wait_for_spoken_reply(since=0)  # the greeting
        for turn in range(sentences):
            speech = await sentence_with_a_pause(spoken_index(index, turn))
            await start.wait()  # every call speaks at the same moment
            mark = len(client.messages)
            spoke_until = await client.microphone.say(speech)
            await client.wait_for_spoken_reply(mark, timeout=REPLY_TIMEOUT_SECS)
            waits.append(time.time() - spoke_until)
    finally:
        await client.close()
    return waits


async def run_calls(base_url: str, calls: int, sentences: int) -> list[float]:
    start = asyncio.Barrier(calls)
    results = await asyncio.gather(
        *(one_call(base_url, index, sentences, start) for index in range(calls))
    )
    return [wait for waits in results for wait in waits]


def measure(speaches: str, ollama: str, calls: int, sentences: int) -> dict[str, Any]:
    clear_standin_requests(ollama, speaches)
    with run_agent(agent_env(speaches, ollama, MAX_SESSIONS=str(calls))) as agent:
        waits = asyncio.run(run_calls(agent.base_url, calls, sentences))
    said = user_words(chat_requests(ollama))
    segments = [e for e in standin_requests(speaches) if e["path"] == "/v1/audio/transcriptions"]
    spoken = [spoken_index(call, turn) for call in range(calls) for turn in range(sentences)]
    split = not_answered_whole(said, spoken)
    return {
        "calls": calls,
        "sentences": len(spoken),
        "turns": len(said),
        "segments_transcribed": len(segments),  # two a sentence: the pause ends a segment
        "split": split,
        "reply_done_secs_p50": round(statistics.median(waits), 2) if waits else None,
        "heard": [" ".join(words) for words in said],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 2 calls, 1 sentence each")
    args = parser.parse_args(argv)
    levels, sentences = ((1, 2), 1) if args.quick else ((1, 2, 4), 2)
    loopback_only()
    rows = []
    speaches_args = ("--installed-all", "--warm", "--stt-serial")
    with (
        start_standin("tests.standins.speaches", *speaches_args) as (_, speaches),
        start_standin("tests.standins.ollama", "--installed", LLM_MODEL) as (_, ollama),
    ):
        for calls in levels:
            rows.append(measure(speaches, ollama, calls, sentences))
            row = rows[-1]
            print(
                f"{calls} calls: {row['split']} of {row['sentences']} sentences split "
                f"({row['turns']} turns, {row['segments_transcribed']} segments transcribed), "
                f"reply done {row['reply_done_secs_p50']} s after the speech (p50)",
                flush=True,
            )
    out = ARTIFACTS / "splits.json"
    ARTIFACTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print("\n| calls at once | sentences | split | reply done after speech, p50 |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        cells = (row["calls"], row["sentences"], row["split"], f"{row['reply_done_secs_p50']} s")
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print(f"\nOne-at-a-time STT (real Whisper tiny.en); the goal is 0 split. Details in {out}.")


if __name__ == "__main__":
    main()
