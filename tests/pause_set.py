"""The pause set: sentences said with a hesitation in the middle, and sentences said in one
go, as speech; and how to tell, from the conversation the LLM was given, which of them
reached it as one whole user message. Used by ``python -m tests.bench.pauses``.

A paused sentence is synthesised whole, with a comma where the speaker hesitates, so the
first half keeps the rising, unfinished tune a person's voice has there; the comma's short
gap in the audio is then found by its quiet samples and stretched to the pause wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tests.audio import normalize_words, synthesize, trim_silence
from tests.webrtc_client import SAMPLE_RATE

QUIET_LEVEL = 300  # int16 amplitude at or below which a sample counts as silence
LEAD_SECS = 0.3  # silence before each utterance: the microphone was quiet, then speech


@dataclass(frozen=True)
class Utterance:
    first: str  # a complete sentence, or the words before the hesitation
    second: str = ""  # the words after it ("" for a complete sentence)
    pause_ms: int = 0

    @property
    def paused(self) -> bool:
        return bool(self.second)

    @property
    def text(self) -> str:
        """What is said, with a comma at the hesitation."""
        return f"{self.first}, {self.second}" if self.paused else self.first

    @property
    def halves(self) -> tuple[str, ...]:
        return (self.first, self.second) if self.paused else (self.first,)


def _paused(first: str, pause_ms: int, second: str) -> Utterance:
    return Utterance(first, second, pause_ms)


# People hesitate after a preposition or an article, around "um" and "uh", and in the
# middle of a list. The pauses cover 300-1000 ms evenly, in no particular order.
PAUSED = (
    _paused("I'd like to book a table for", 700, "four people tomorrow evening."),
    _paused("Set a timer for, um", 900, "ten minutes."),
    _paused("What's the weather going to be like in", 500, "Paris on Saturday?"),
    _paused("Can you add eggs, milk", 350, "and some bread to my shopping list?"),
    _paused("Remind me to call the", 800, "dentist on Monday morning."),
    _paused("Play some music by", 450, "the Beatles in the kitchen."),
    _paused("Turn the living room lights down to, uh", 1000, "half brightness."),
    _paused("How long does it take to drive to", 600, "the airport from here?"),
    _paused("Wake me up tomorrow at", 330, "half past six."),
    _paused("What time does the", 950, "pharmacy close tonight?"),
    _paused("Could you read me the latest news about", 400, "the football match?"),
    _paused("Send a message to my, um", 750, "brother saying I'll be late."),
    _paused("Add a meeting with Sarah on", 550, "Thursday at three o'clock."),
    _paused("I need a recipe with chicken", 300, "rice and broccoli."),
    _paused("How many grams of sugar are in a", 850, "glass of orange juice?"),
    _paused("Set the thermostat to", 650, "twenty one degrees please."),
    _paused("Tell me a joke about", 370, "cats and dogs."),
    _paused("Put on the radio station that plays, uh", 520, "classical music."),
    _paused("Please order more coffee beans and", 880, "a box of green tea."),
    _paused("What's the capital of", 420, "Australia?"),
    _paused("Call the restaurant and book a table for, um", 980, "two people at eight."),
    _paused("Switch off all the lights in the", 620, "bedroom and the hallway."),
)

# Said in one breath: no gap the voice detector could take for the end of speech.
COMPLETE = tuple(
    Utterance(text)
    for text in (
        "Please turn on the kitchen lights.",
        "What time is it in Tokyo right now?",
        "Set an alarm for seven in the morning.",
        "How tall is the Eiffel Tower?",
        "Play some relaxing piano music.",
        "What's on my calendar for tomorrow?",
        "Turn the volume down a little.",
        "Is it going to rain this afternoon?",
        "Add bananas to my shopping list.",
        "How many days are left until Christmas?",
        "Please lock the front door.",
        "What is twelve times fifteen?",
        "Start a ten minute timer for the pasta.",
        "Who wrote the novel Pride and Prejudice?",
        "Dim the bedroom lights to half.",
        "How do I say thank you in Spanish?",
        "Remind me to water the plants tonight.",
        "What's the traffic like on my way to work?",
        "Turn off the television in the living room.",
        "Tell me something interesting about octopuses.",
    )
)


def session_order(paused: int = len(PAUSED), complete: int = len(COMPLETE)) -> list[Utterance]:
    """The first ``paused`` and ``complete`` utterances, taking turns (paused first)."""
    order: list[Utterance] = []
    for index in range(max(paused, complete)):
        order += [PAUSED[index]] if index < paused else []
        order += [COMPLETE[index]] if index < complete else []
    return order


# --- speech ----------------------------------------------------------------------------------


def quiet_gaps(samples: np.ndarray, min_samples: int) -> list[tuple[int, int]]:
    """Stretches of at least ``min_samples`` quiet samples between two louder ones:
    (index of the first quiet sample, length)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > QUIET_LEVEL)
    steps = np.diff(loud)
    return [(int(loud[i]) + 1, int(steps[i]) - 1) for i in np.flatnonzero(steps > min_samples)]


def comma_gap(whole: np.ndarray, first_half: np.ndarray, rate: int) -> tuple[int, int]:
    """The quiet gap of the hesitation's comma in ``whole`` (trimmed speech): the one that
    begins nearest to where the first half, said alone, ends. Other commas ("for, um,") and
    the closures of stop consonants make gaps too, but none that near."""
    gaps = quiet_gaps(whole, int(0.1 * rate))
    if not gaps:
        raise ValueError("no gap in the speech")
    start, length = min(gaps, key=lambda gap: abs(gap[0] - len(first_half)))
    if abs(start - len(first_half)) > 0.2 * rate or length < 0.15 * rate:
        raise ValueError(f"no comma gap near {len(first_half) / rate:.2f} s: {gaps}")
    return start, length


def paused_speech(utterance: Utterance, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A paused utterance's speech, trimmed, its hesitation exactly ``pause_ms`` of silence."""
    whole = trim_silence(synthesize(utterance.text, rate), QUIET_LEVEL)
    first_half = trim_silence(synthesize(f"{utterance.first},", rate), QUIET_LEVEL)
    start, length = comma_gap(whole, first_half, rate)
    pause = np.zeros(round(utterance.pause_ms * rate / 1000), np.int16)
    return np.concatenate([whole[:start], pause, whole[start + length :]])


def speech_for(utterance: Utterance, rate: int = SAMPLE_RATE) -> np.ndarray:
    """What the client plays for an utterance: LEAD_SECS of silence, then the speech, whose
    last sample is the end of speech (no trailing silence)."""
    if utterance.paused:
        speech = paused_speech(utterance, rate)
    else:
        speech = trim_silence(synthesize(utterance.text, rate), QUIET_LEVEL)
    return np.concatenate([np.zeros(round(LEAD_SECS * rate), np.int16), speech])


# --- scoring ---------------------------------------------------------------------------------

# Words too common to tell one sentence, or one half, from another; numbers, because Whisper
# writes "ten" as "10".
NOT_CONTENT = frozenset(
    " ".join(
        (
            "a an the to for of in on at by and or but with about from my me i i'd i'll you",
            "your it is are be can could do does what what's how please some um uh",
            "one two three four five six seven eight nine ten eleven twelve fifteen twenty",
            "thirty hundred",
        )
    ).split()
)


def content_words(text: str) -> set[str]:
    words = normalize_words(text)
    content = {w for w in words if w not in NOT_CONTENT and not w.isdigit()}
    return content or set(words)


def half_heard(half: str, message: str) -> bool:
    """Whether most of a half's content words are in a message: Whisper tiny mishears a word
    now and then ("Paris" as "pairs"), never most of them."""
    wanted = content_words(half)
    return 2 * len(wanted & set(normalize_words(message))) >= len(wanted)


def user_messages(messages: list[dict]) -> list[str]:
    """The text of each user message of a chat request's history, in order."""
    texts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(part.get("text", "")) for part in content)
        texts.append(str(content or ""))
    return texts


def conversation_before(marker: str, chat_requests: list[dict]) -> list[str] | None:
    """The user messages of the conversation up to a typed ``marker`` turn, from the history
    of the chat request that answered it (None if none did). Requests made before it may
    have been speculative and withdrawn; what they held counts only if this history has it."""
    for request in reversed(chat_requests):
        said = user_messages(request.get("messages", []))
        if said[-1:] == [marker]:
            return said[:-1]
    return None


def match(message: str, text: str) -> int:
    """How well a message matches a text: content words first, any shared word breaks ties."""
    heard = set(normalize_words(message))
    return 100 * len(content_words(text) & heard) + len(set(normalize_words(text)) & heard)


def assign(messages: list[str], utterances: list[Utterance]) -> list[int]:
    """For each user message, the index of the utterance it came from: the order-keeping
    assignment that matches best (messages come in the order spoken)."""
    if not messages:
        return []
    score = [[match(m, u.text) for u in utterances] for m in messages]
    best = [score[0]]  # best[k][j]: the most words matched up to message k, k coming from j
    came_from: list[list[int]] = [[]]
    for k in range(1, len(messages)):
        # Message k - 1 came from utterance j or an earlier one: the best of those.
        best.append([])
        came_from.append([])
        earlier = 0
        for j in range(len(utterances)):
            if best[k - 1][j] > best[k - 1][earlier]:
                earlier = j
            best[k].append(score[k][j] + best[k - 1][earlier])
            came_from[k].append(earlier)
    chosen = [best[-1].index(max(best[-1]))]
    for k in range(len(messages) - 1, 0, -1):
        chosen.append(came_from[k][chosen[-1]])
    return chosen[::-1]


@dataclass(frozen=True)
class Verdict:
    utterance: Utterance
    messages: tuple[str, ...]  # the user messages that came from it
    heard_early_ms: float | None  # reply heard this long before the end of speech
    inside: str | None = None  # with no message of its own: another's message that holds it

    @property
    def whole(self) -> bool:
        """One user message holding every half."""
        return len(self.messages) == 1 and all(
            half_heard(half, self.messages[0]) for half in self.utterance.halves
        )

    @property
    def cut_off(self) -> bool:
        return self.heard_early_ms is not None or not self.whole

    @property
    def reasons(self) -> list[str]:
        found = []
        if self.heard_early_ms is not None:
            found.append(f"reply heard {self.heard_early_ms:.0f} ms before the end of speech")
        if self.inside is not None:
            found.append(f"reached the conversation only inside another's message: {self.inside!r}")
        elif not self.messages:
            found.append("never reached the conversation")
        elif len(self.messages) > 1:
            found.append(f"reached the conversation as {len(self.messages)} user messages")
        elif not self.whole:
            missing = [h for h in self.utterance.halves if not half_heard(h, self.messages[0])]
            found.append("the conversation lacks " + " and ".join(repr(h) for h in missing))
        return found


def judge(
    utterances: list[Utterance], history: list[str], heard_early_ms: list[float | None]
) -> list[Verdict]:
    """One verdict per utterance said, from the user messages of the conversation (the last
    chat request's history, typed turns already removed) and when reply audio was heard."""
    owners = assign(history, utterances)
    verdicts = []
    for index, (utterance, early) in enumerate(zip(utterances, heard_early_ms, strict=True)):
        mine = tuple(m for m, owner in zip(history, owners, strict=True) if owner == index)
        # Two sentences run together into one message, counted as the neighbour's.
        before = [m for m, owner in zip(history, owners, strict=True) if owner < index][-1:]
        after = [m for m, owner in zip(history, owners, strict=True) if owner > index][:1]
        holders = [m for m in before + after if all(half_heard(h, m) for h in utterance.halves)]
        best = max(holders, key=lambda m: match(m, utterance.text), default=None)
        inside = None if mine else best
        verdicts.append(Verdict(utterance, mine, early, inside))
    return verdicts
