"""What a person is told when a backend fails: one plain sentence per part of the voice
path, never the library's or the backend's own text (that goes to the log).

A failure of speech-to-text or of the LLM is said aloud and shown; a failure of
text-to-speech can only be shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Part = Literal["stt", "llm", "tts"]


@dataclass(frozen=True)
class FaultWords:
    sentence: str
    spoken: bool  # said aloud (through text-to-speech) as well as shown


WORDS: dict[Part, FaultWords] = {
    "stt": FaultWords("I couldn't hear that, could you say it again?", spoken=True),
    "llm": FaultWords(
        "I'm having trouble thinking right now — the language model isn't answering.",
        spoken=True,
    ),
    "tts": FaultWords(
        "My voice could not be produced just now, so this reply is only shown as text.",
        spoken=False,
    ),
}

# Any other error the conversation reports to the page, and one that ends it.
SOMETHING_ELSE = "Something went wrong inside the assistant; it is still listening."
STOPPED = "Something went wrong inside the assistant, and it had to stop."
