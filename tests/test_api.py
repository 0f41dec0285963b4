"""The HTTP API as a browser (or a hostile page) sees it: clear JSON errors, never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import AgentProcess
from tests.test_hostile_input import CHROME_OFFER

VALID_SDP_START = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)

# Offers that are wrong in one way or another; none may start a session or break the agent.
malformed_offer_bodies = st.one_of(
    json_values.filter(lambda value: not isinstance(value, dict)).map(json.dumps),
    st.dictionaries(st.sampled_from(["sdp", "type", "pc_id", "restart_pc"]), json_values).map(
        json.dumps
    ),
    st.builds(
        lambda sdp, kind: json.dumps({"sdp": sdp, "type": kind}),
        st.text(max_size=200) | st.just(VALID_SDP_START),
        st.sampled_from(["offer", "answer", "pranswer", "rollback", ""]),
    ),
    st.builds(
        lambda sdp: json.dumps({"sdp": VALID_SDP_START + sdp, "type": "offer"}),
        st.text(max_size=300),
    ),
    st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")),
)

malformed_patch_bodies = st.one_of(
    json_values.map(json.dumps),
    st.builds(
        lambda pc_id, candidates: json.dumps({"pc_id": pc_id, "candidates": candidates}),
        json_values,
        json_values,
    ),
    st.builds(
        lambda pc_id, candidate: json.dumps(
            {
                "pc_id": pc_id,
                "candidates": [{"candidate": candidate, "sdp_mid": "0", "sdp_mline_index": 0}],
            }
        ),
        st.text(max_size=40),
        st.text(max_size=120),
    ),
)

SHARED_SERVER = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_json_error(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"]
    assert "Traceback" not in response.text
    return body


@SHARED_SERVER
@given(body=malformed_offer_bodies, content_type=st.sampled_from(["application/json", None]))
def test_a_malformed_offer_gets_a_4xx_never_a_5xx(
    agent: AgentProcess, body: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": "text/plain"}
    before = httpx.get(f"{agent.base_url}/health").json()["sessions"]["active"]
    response = httpx.post(
        f"{agent.base_url}/api/offer", content=body.encode(), headers=headers, timeout=30
    )
    assert_json_error(response, 400, 404)
    assert httpx.get(f"{agent.base_url}/health").json()["sessions"]["active"] == before


@SHARED_SERVER
@given(body=malformed_patch_bodies)
def test_a_malformed_candidate_patch_gets_a_4xx_never_a_5xx(agent: AgentProcess, body: str) -> None:
    response = httpx.patch(
        f"{agent.base_url}/api/offer",
        content=body.encode(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_json_error(response, 400, 404)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"sdp": ' * 3000, b"9" * 5000])
def test_a_deeply_nested_or_endless_body_is_a_400(
    agent: AgentProcess, method: str, body: bytes
) -> None:
    response = httpx.request(
        method,
        f"{agent.base_url}/api/offer",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert assert_json_error(response, 400)["code"] == "bad_request"


def test_an_unknown_session_is_a_404(agent: AgentProcess) -> None:
    offer = {"sdp": CHROME_OFFER, "type": "offer"}  # well-formed: checked before it is routed
    response = httpx.post(f"{agent.base_url}/api/offer", json={**offer, "pc_id": "gone"})
    assert assert_json_error(response, 404)["code"] == "unknown_session"
    response = httpx.patch(f"{agent.base_url}/api/offer", json={"pc_id": "gone", "candidates": []})
    assert assert_json_error(response, 404)["code"] == "unknown_session"


def test_an_offer_without_audio_is_refused_in_words(agent: AgentProcess) -> None:
    response = httpx.post(
        f"{agent.base_url}/api/offer", json={"sdp": VALID_SDP_START, "type": "offer"}
    )
    assert "no audio" in assert_json_error(response, 400)["error"]


@pytest.mark.parametrize("origin", ["http://evil.example", "http://192.168.1.20:7860", "null"])
def test_pages_from_other_origins_cannot_use_the_api(agent: AgentProcess, origin: str) -> None:
    response = httpx.post(
        f"{agent.base_url}/api/offer",
        json={"sdp": VALID_SDP_START, "type": "offer"},
        headers={"Origin": origin},
    )
    assert assert_json_error(response, 403)["code"] == "cross_origin"


def test_the_same_origin_may_use_the_api(agent: AgentProcess) -> None:
    response = httpx.post(
        f"{agent.base_url}/api/offer",
        json={"sdp": VALID_SDP_START, "type": "offer"},
        headers={"Origin": agent.base_url},
    )
    assert assert_json_error(response, 400)["code"] == "bad_request"


def test_unknown_api_paths_and_methods_answer_in_json(agent: AgentProcess) -> None:
    assert_json_error(httpx.get(f"{agent.base_url}/api/nothing"), 404)
    assert_json_error(httpx.get(f"{agent.base_url}/api/offer"), 405)


def test_health_reports_ready_backends_and_sessions(agent: AgentProcess) -> None:
    response = httpx.get(f"{agent.base_url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["sessions"]["max"] >= 1
    assert body["backends"]["ollama"]["ready"] is True
    assert body["backends"]["speaches"]["models"]  # both model ids, each installed
    assert all(model["installed"] for model in body["backends"]["speaches"]["models"].values())
