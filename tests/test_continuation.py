"""A person who goes on after the bot began answering: both halves become one user message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.continuation import joined_turn

message = st.builds(
    lambda role, text: {"role": role, "content": text},
    st.sampled_from(["system", "user", "assistant"]),
    st.text(min_size=1, max_size=20),
)


@settings(max_examples=200)
@given(
    before=st.lists(message, max_size=5),
    replies=st.lists(st.text(max_size=20), max_size=2),
    rest=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3),
)
def test_the_halves_join_and_the_interrupted_reply_goes(before, replies, rest) -> None:
    first = {"role": "user", "content": "Book a table."}
    later = [{"role": "assistant", "content": r} for r in replies]
    later += [{"role": "user", "content": r} for r in rest]
    joined = joined_turn([*before, first, *later], first)
    assert joined is not None
    assert joined[: len(before)] == before, "the conversation before the turn is untouched"
    assert joined[len(before) :] == [
        {"role": "user", "content": " ".join(["Book a table.", *rest])}
    ]
    assert first["content"] == "Book a table.", "the original message object is not changed"


def test_nothing_to_join_yet() -> None:
    first = {"role": "user", "content": "Book a table."}
    assert joined_turn([first, {"role": "assistant", "content": "Sure"}], first) is None
    assert joined_turn([{"role": "user", "content": "Book a table."}], first) is None, (
        "an equal message that is not the turn itself"
    )
