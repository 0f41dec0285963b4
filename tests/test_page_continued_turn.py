"""A person who goes on after the bot began answering ("Please turn on the lights in the
kitchen" … "You said…" … "and in the hallway too"): the agent joins both parts into one user
message, drops the reply it had begun (agent/continuation.py) and tells the page
("turn-continued"). The page's transcript must then show what the conversation holds: one
user entry with both parts, the begun reply struck through as withdrawn and without latency
figures, and the new reply with its own.

The page's own Conversation and Transcript modules, in Debian's Chromium on the agent's
page, are fed the RTVI messages of such a turn in the order Pipecat 1.14 sends them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Playwright

from tests.browser import CHROMIUM, idle_page
from tests.helpers import AgentProcess

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

FIRST_PART = "Please turn on the lights in the kitchen."
SECOND_PART = "and in the hallway too."
BEGUN_REPLY = "You said please turn on the lights in the kitchen."
WHOLE_REPLY = "You said please turn on the lights in the kitchen and in the hallway too."
WITHDRAWN_NOTE = "withdrawn: you went on"

# Feeds the messages to a Conversation and Transcript of their own, on a list styled like the
# page's; ["heard", {ms}] stands for the page's own heard-latency figure (call.js hands it to
# the transcript). Returns what each entry shows.
RUN = """async (messages) => {
  const { Conversation } = await import("/static/conversation.js");
  const { Transcript } = await import("/static/transcript.js");
  const list = document.createElement("ol");
  list.className = "transcript";
  const empty = document.createElement("p");
  document.body.append(list, empty);
  const transcript = new Transcript(list, empty);
  const conversation = new Conversation(transcript, { problem() {}, spoke() {}, fatal() {} });
  for (const [type, data] of messages) {
    if (type === "heard") transcript.setHeardLatency(data.ms);
    else conversation.handle({ type, data });
  }
  conversation.end();
  const shown = (el) => (el && el.checkVisibility() ? el.textContent : null);
  const entries = [...list.children].map((li) => ({
    who: li.querySelector(".who").textContent,
    text: li.querySelector(".text").textContent,
    withdrawn: li.classList.contains("withdrawn"),
    note: shown(li.querySelector(".withdrawn-note")),
    cut: shown(li.querySelector(".cut")),
    struck: getComputedStyle(li.querySelector(".text")).textDecorationLine,
    latencyMs: li.dataset.latencyMs ?? null,
    heardMs: li.dataset.heardMs ?? null,
    figures: [...li.querySelectorAll(".latency, .heard")].map((el) => el.textContent),
  }));
  list.remove();
  empty.remove();
  return entries;
}"""


@pytest.fixture
def page(agent: AgentProcess, playwright: Playwright, tmp_path: Path) -> Iterator[Page]:
    with idle_page(agent.base_url, playwright, tmp_path / "profile") as loaded:
        yield loaded


def output(segment_id: int, text: str, status: str, said: str = "") -> list:
    """A bot-output message for one sentence (protocol 2.2)."""
    progress = {"accumulated_text": said, "remaining_text": text[len(said) :].strip()}
    data = {"text": text, "output_type": "sentence", "segment_id": segment_id}
    data |= {"will_be_spoken": True, "spoken_status": status, "spoken_progress": progress}
    return ["bot-output", data]


def spoken(segment_id: int, text: str) -> list[list]:
    """A sentence of the bot's, all of it to come, then all said."""
    return [output(segment_id, text, "new"), output(segment_id, text, "completed", text)]


def begun(segment_id: int, text: str) -> list[list]:
    """A sentence of the bot's, of which its first two words were said."""
    first_words = " ".join(text.split()[:2])
    return [output(segment_id, text, "new"), output(segment_id, text, "in-progress", first_words)]


def turn(words: str, *, over_the_bot: bool = False) -> list[list]:
    """The person speaks; Pipecat 1.14 judges the turn over once it is transcribed. A turn
    start always comes with "bot-interrupted"; ``over_the_bot``: the bot was speaking."""
    return [
        ["user-started-speaking", {}],
        ["bot-interrupted", {}],
        *([["bot-stopped-speaking", {}]] if over_the_bot else []),
        ["vad-user-started-speaking", {}],
        ["vad-user-stopped-speaking", {}],
        ["user-input", {"text": words, "input_type": "transcription", "final": True}],
        ["user-stopped-speaking", {}],
    ]


def reply_starts(turn_number: int, agent_ms: int, heard_ms: int) -> list[list]:
    latency = {"type": "turn-latency", "turn": turn_number, "ms": agent_ms}
    return [
        ["bot-llm-started", {}],
        ["bot-started-speaking", {}],
        ["server-message", latency | {"parts_ms": {"transcription": 120}}],
        ["heard", {"ms": heard_ms}],
    ]


def reply_ends() -> list[list]:
    return [["bot-llm-stopped", {}], ["bot-stopped-speaking", {}]]


def greeting() -> list[list]:
    return [
        ["bot-ready", {"version": "2.2.0"}],
        ["bot-llm-started", {}],
        ["bot-started-speaking", {}],
        *spoken(0, "Hello! How can I help?"),
        *reply_ends(),
    ]


TURN_CONTINUED = [["server-message", {"type": "turn-continued"}]]


def gone_on_with(*, told: bool) -> list[list]:
    """The first part, the bot begins to answer it, the person goes on; the agent tells the
    page (``told``) after the second part's transcript, before the new reply."""
    return [
        *greeting(),
        *turn(FIRST_PART),
        *reply_starts(1, agent_ms=640, heard_ms=910),
        *begun(1, BEGUN_REPLY),
        *turn(SECOND_PART, over_the_bot=True),
        *(TURN_CONTINUED if told else []),
        *reply_starts(2, agent_ms=720, heard_ms=1010),
        *spoken(2, WHOLE_REPLY),
        *reply_ends(),
    ]


def run(page: Page, messages: list[list]) -> list[dict]:
    entries = page.evaluate(RUN, messages)
    for entry in entries:
        print(entry)
    return entries


def test_a_continued_turn_is_one_user_entry_and_the_begun_reply_is_withdrawn(page: Page) -> None:
    entries = run(page, gone_on_with(told=True))
    assert [(e["who"], e["text"]) for e in entries] == [
        ("Assistant", "Hello! How can I help?"),
        ("You", f"{FIRST_PART} {SECOND_PART}"),
        ("Assistant", "You said"),
        ("Assistant", WHOLE_REPLY),
    ]
    _, _, withdrawn, reply = entries
    # Kept as heard, plainly marked, and no figure of its own passes for the answer's.
    assert withdrawn["withdrawn"]
    assert withdrawn["note"] == WITHDRAWN_NOTE
    assert withdrawn["cut"] is None
    assert withdrawn["struck"] == "line-through"
    assert (withdrawn["latencyMs"], withdrawn["heardMs"], withdrawn["figures"]) == (None, None, [])
    # The answer: its own figures, nothing struck.
    assert not reply["withdrawn"] and reply["note"] is None and reply["struck"] == "none"
    assert (reply["latencyMs"], reply["heardMs"]) == ("720", "1010")
    assert reply["figures"] == ["replied in 720 ms", "heard in 1.01 s"]
    assert [e["withdrawn"] for e in entries].count(True) == 1


def test_without_turn_continued_the_transcript_is_as_before(page: Page) -> None:
    entries = run(page, gone_on_with(told=False))
    assert [(e["who"], e["text"]) for e in entries] == [
        ("Assistant", "Hello! How can I help?"),
        ("You", FIRST_PART),
        ("Assistant", "You said"),
        ("You", SECOND_PART),
        ("Assistant", WHOLE_REPLY),
    ]
    interrupted, reply = entries[2], entries[4]
    assert not any(e["withdrawn"] or e["note"] for e in entries)
    assert interrupted["cut"] == "(interrupted)" and interrupted["struck"] == "none"
    assert (interrupted["latencyMs"], interrupted["heardMs"]) == ("640", "910")
    assert (reply["latencyMs"], reply["heardMs"]) == ("720", "1010")


def test_going_on_twice_joins_all_three_parts(page: Page) -> None:
    third = "Thank you."
    entries = run(
        page,
        [
            *greeting(),
            *turn(FIRST_PART),
            *reply_starts(1, agent_ms=640, heard_ms=910),
            *begun(1, BEGUN_REPLY),
            *turn(SECOND_PART, over_the_bot=True),
            *TURN_CONTINUED,
            *reply_starts(2, agent_ms=720, heard_ms=1010),
            *begun(2, WHOLE_REPLY),
            *turn(third, over_the_bot=True),
            *TURN_CONTINUED,
            *reply_starts(3, agent_ms=800, heard_ms=1100),
            *spoken(3, "You are welcome."),
            *reply_ends(),
        ],
    )
    assert [(e["who"], e["text"], e["withdrawn"]) for e in entries] == [
        ("Assistant", "Hello! How can I help?", False),
        ("You", f"{FIRST_PART} {SECOND_PART} {third}", False),
        ("Assistant", "You said", True),
        ("Assistant", "You said", True),
        ("Assistant", "You are welcome.", False),
    ]
    assert [e["latencyMs"] for e in entries] == [None, None, None, None, "800"]


def test_a_turn_continued_before_the_bot_spoke_leaves_earlier_turns_alone(page: Page) -> None:
    """The reply was only being prepared (nothing of it heard, no entry for it): both parts
    are in one entry already, and the turn before, with its answer, stays as it was."""
    entries = run(
        page,
        [
            *greeting(),
            *turn("What time is it?"),
            *reply_starts(1, agent_ms=600, heard_ms=850),
            *spoken(1, "It is noon."),
            *reply_ends(),
            *turn(FIRST_PART),
            ["bot-llm-started", {}],
            *turn(SECOND_PART),
            *TURN_CONTINUED,
            *reply_starts(2, agent_ms=700, heard_ms=950),
            *spoken(2, WHOLE_REPLY),
            *reply_ends(),
        ],
    )
    assert [(e["who"], e["text"], e["withdrawn"]) for e in entries] == [
        ("Assistant", "Hello! How can I help?", False),
        ("You", "What time is it?", False),
        ("Assistant", "It is noon.", False),
        ("You", f"{FIRST_PART} {SECOND_PART}", False),
        ("Assistant", WHOLE_REPLY, False),
    ]
    assert [e["latencyMs"] for e in entries] == [None, None, "600", None, "700"]
