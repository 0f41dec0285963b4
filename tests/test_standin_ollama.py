"""The Ollama stand-in, run as a real subprocess and spoken to over HTTP like Ollama."""

from __future__ import annotations

import json
import math
import string
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import standin_client
from tests.standins.ollama import GREETING, reply_for

MODEL = "llama3.2:1b"
SIZE = 400_000


def standin(*flags: str) -> AbstractContextManager[httpx.Client]:
    """A stand-in process of its own, with `MODEL` installed and the given flags."""
    return standin_client("tests.standins.ollama", "--installed", MODEL, *flags, timeout=10)


@pytest.fixture(scope="module")
def ollama() -> Iterator[httpx.Client]:
    with standin("--model-size-bytes", str(SIZE), "--pull-bytes-per-sec", "4000000") as client:
        yield client


@pytest.fixture
def fresh() -> Iterator[httpx.Client]:
    with standin() as client:
        yield client


def pull_lines(client: httpx.Client, model: str) -> list[dict[str, Any]]:
    response = client.post("/api/pull", json={"model": model})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


def progress(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "digest" in line]


def installed(client: httpx.Client) -> list[str]:
    return [m["name"] for m in client.get("/api/tags").json()["models"]]


def sse_data(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line.removeprefix("data: ")


def test_root_version_tags_and_show(ollama: httpx.Client) -> None:
    assert ollama.get("/").text == "Ollama is running"
    assert ollama.get("/api/version").json()["version"].startswith("0.")
    entry = ollama.get("/api/tags").json()["models"][0]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= entry.keys()
    assert (entry["name"], entry["model"], entry["size"]) == (MODEL, MODEL, SIZE)
    assert entry["details"]["format"] == "gguf"

    shown = ollama.post("/api/show", json={"model": MODEL})
    assert shown.status_code == 200
    assert shown.json()["details"]["family"] == "llama"
    for missing in ("nope", "llama3.2"):  # no tag means ":latest", which is not installed
        response = ollama.post("/api/show", json={"model": missing})
        assert response.status_code == 404
        assert response.json() == {"error": f"model '{missing}' not found"}


def test_pull_streams_progress_until_success(ollama: httpx.Client) -> None:
    lines = pull_lines(ollama, "gemma3:1b")
    assert lines[0] == {"status": "pulling manifest"}
    assert [line["status"] for line in lines[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    steps = progress(lines)
    digests = list(dict.fromkeys(line["digest"] for line in steps))
    assert len(digests) == 3
    for digest in digests:
        layer = [line for line in steps if line["digest"] == digest]
        assert all(line["status"] == f"pulling {digest[7:19]}" for line in layer)
        done = [line.get("completed", 0) for line in layer]
        assert done == sorted(set(done)), "completed grows with every line"
        assert done[-1] == layer[0]["total"]
    big = [line for line in steps if line["digest"] == digests[0]]
    assert len(big) >= 4, "several progress lines while the big layer arrives"
    assert sum(line["total"] for line in steps if "completed" not in line) == SIZE
    assert "gemma3:1b" in installed(ollama)

    again = pull_lines(ollama, "gemma3:1b")  # already there: each layer is complete at once
    assert [line["completed"] == line["total"] for line in progress(again)] == [True] * 3
    assert again[-1] == {"status": "success"}


def test_pull_unknown_model_fails_like_ollama(ollama: httpx.Client) -> None:
    assert pull_lines(ollama, "no-such-model") == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    response = ollama.post("/api/pull", json={"model": "no-such-model", "stream": False})
    assert response.status_code == 500
    assert response.json() == {"error": "pull model manifest: file does not exist"}


def test_pull_without_streaming(ollama: httpx.Client) -> None:
    response = ollama.post("/api/pull", json={"model": "qwen2.5:0.5b", "stream": False})
    assert response.json() == {"status": "success"}
    assert "qwen2.5:0.5b" in installed(ollama)


def test_broken_pull_resumes_where_it_stopped() -> None:
    with standin("--model-size-bytes", str(SIZE), "--fail-pull-after-bytes", "150000") as client:
        first = pull_lines(client, "gemma3:1b")
        assert first[-1] == {"error": "max retries exceeded: unexpected EOF"}
        assert progress(first)[-1]["completed"] == 150_000
        assert "gemma3:1b" not in installed(client)

        attempts = [first]
        while attempts[-1][-1] != {"status": "success"}:
            attempts.append(pull_lines(client, "gemma3:1b"))
            assert progress(attempts[-1])[0]["completed"] > 0, "resumes, not from zero"
        assert len(attempts) == math.ceil(SIZE / 150_000)
        assert "gemma3:1b" in installed(client)


def test_pull_cut_off_by_the_client_resumes() -> None:
    with standin("--model-size-bytes", str(SIZE), "--pull-bytes-per-sec", "200000") as client:
        with client.stream("POST", "/api/pull", json={"model": "gemma3:1b"}) as response:
            for line in response.iter_lines():
                if json.loads(line).get("completed"):
                    break  # hang up once some bytes have arrived
        with client.stream("POST", "/api/pull", json={"model": "gemma3:1b"}) as response:
            lines = (json.loads(line) for line in response.iter_lines())
            resumed = next(line for line in lines if "digest" in line)
        assert 0 < resumed["completed"] < resumed["total"]


def test_warm_up_loads_and_unloads(ollama: httpx.Client) -> None:
    response = ollama.post("/api/generate", json={"model": MODEL, "keep_alive": -1})
    body = response.json()
    assert response.status_code == 200
    assert {k: body[k] for k in ("model", "response", "done", "done_reason")} == {
        "model": MODEL,
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    assert body["created_at"].endswith("Z")
    loaded = ollama.get("/api/ps").json()["models"]
    assert [m["name"] for m in loaded] == [MODEL]
    assert {"expires_at", "size_vram", "digest", "details"} <= loaded[0].keys()

    unload = ollama.post("/api/generate", json={"model": MODEL, "keep_alive": 0})
    assert unload.json()["done_reason"] == "unload"
    assert ollama.get("/api/ps").json()["models"] == []

    missing = ollama.post("/api/generate", json={"model": "nope", "keep_alive": -1})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'nope' not found"}


CONVERSATION = [
    {"role": "system", "content": "You are a helpful voice assistant."},
    {"role": "user", "content": "What is the weather like?"},
    {"role": "assistant", "content": "You said: What is the weather like."},
    {"role": "user", "content": [{"type": "text", "text": "Turn on the kitchen light!"}]},
]


def test_streamed_chat_assembles_the_reply(ollama: httpx.Client) -> None:
    request = {
        "model": MODEL,
        "messages": CONVERSATION,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with ollama.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = list(sse_data(response))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    *content, finish, usage = chunks
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in content[1:])
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert (
        text
        == reply_for(CONVERSATION)
        == ("You said: Turn on the kitchen light. Before that, you said: What is the weather like.")
    )
    assert len(content) == len(text.split()), "one token per word"
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(content)


def test_chat_without_streaming_and_the_greeting_turn(ollama: httpx.Client) -> None:
    request = {"model": MODEL, "messages": CONVERSATION[:1]}
    body = ollama.post("/v1/chat/completions", json=request).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": GREETING}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] > 0


def test_chat_with_a_missing_model_is_an_openai_style_404(ollama: httpx.Client) -> None:
    response = ollama.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "model 'nope' not found",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }


def test_request_log_records_the_conversation_in_order(fresh: httpx.Client) -> None:
    turns = [CONVERSATION[:1], CONVERSATION[:2], CONVERSATION]
    for messages in turns:
        request = {"model": MODEL, "messages": messages, "stream": True, "temperature": 0.2}
        with fresh.stream("POST", "/v1/chat/completions", json=request) as response:
            assert list(sse_data(response))[-1] == "[DONE]"
    fresh.post("/api/generate", json={"model": MODEL, "keep_alive": -1})
    fresh.post("/api/pull", json={"model": MODEL, "stream": False})

    log = fresh.get("/_standin/requests").json()
    assert [c["messages"] for c in log["chat"]] == turns
    assert all(c["stream"] is True and c["temperature"] == 0.2 for c in log["chat"])
    assert log["generate"] == [{"model": MODEL, "keep_alive": -1}]
    assert log["pull"] == [{"model": MODEL, "stream": False}]
    fresh.delete("/_standin/requests")
    assert fresh.get("/_standin/requests").json() == {"chat": [], "pull": [], "generate": []}


def stream_tokens(client: httpx.Client, tokens: list[str]) -> None:
    """Collect streamed tokens into ``tokens`` (kept when the stream breaks)."""
    request = {"model": MODEL, "messages": CONVERSATION, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        for data in sse_data(response):
            assert data != "[DONE]"
            tokens.append(json.loads(data)["choices"][0]["delta"]["content"])


def test_chat_that_crashes_mid_stream() -> None:
    with standin("--fail-chat-after-tokens", "3") as client:
        tokens: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            stream_tokens(client, tokens)
        assert tokens == ["You", " said:", " Turn"]


def test_chat_that_stalls_after_a_slow_first_token() -> None:
    with standin("--ttfb-ms", "300", "--stall-chat-after-tokens", "2") as client:
        client.timeout = httpx.Timeout(10, read=1.0)
        tokens: list[str] = []
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            stream_tokens(client, tokens)
        assert tokens == ["You", " said:"]
        assert time.monotonic() - started >= 0.3 + 1.0


# --- the reply rule ---------------------------------------------------------------------

WORD = st.text(string.ascii_letters + "'-", min_size=1, max_size=8)
SENTENCE = st.lists(WORD, min_size=1, max_size=6).map(" ".join)
ENDING = st.sampled_from(["", ".", "?", "!", "...", " .", "?! "])
NO_WORDS = st.sampled_from(["", "   ", "?", [], [{"type": "image_url", "image_url": "data:,"}]])
OTHER_ROLE = st.sampled_from(["system", "assistant", "tool"])


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str]]:
    """Messages in any order and shape, and the user sentences among them, in order."""
    messages: list[dict[str, Any]] = []
    said: list[str] = []
    for kind in draw(st.lists(st.sampled_from(["user", "empty", "other"]), max_size=8)):
        if kind == "other":
            messages.append({"role": draw(OTHER_ROLE), "content": draw(st.text(max_size=30))})
        elif kind == "empty":
            messages.append({"role": "user", "content": draw(NO_WORDS)})
        else:
            sentence = draw(SENTENCE)
            text = f"  {sentence}{draw(ENDING)}" if draw(st.booleans()) else sentence
            words = text.split(" ")
            cut = draw(st.integers(0, len(words)))
            parts = [" ".join(words[:cut]), " ".join(words[cut:])]
            content: Any = [{"type": "text", "text": p} for p in parts]
            messages.append({"role": "user", "content": draw(st.sampled_from([text, content]))})
            said.append(sentence)
    return messages, said


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_reply_quotes_the_last_two_user_messages(case: tuple[list[Any], list[str]]) -> None:
    messages, said = case
    expected = GREETING
    if said:
        expected = f"You said: {said[-1]}."
        if len(said) > 1:
            expected += f" Before that, you said: {said[-2]}."
    assert reply_for(messages) == expected


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_reply_to_any_text_is_speakable(text: str) -> None:
    reply = reply_for([{"role": "user", "content": text}])
    assert reply == GREETING or (reply.startswith("You said: ") and reply.endswith("."))
    assert reply == " ".join(reply.split()), "single spaces: tokens reassemble exactly"
