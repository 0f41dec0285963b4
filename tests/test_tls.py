"""HTTPS for the network: a self-signed certificate made once and kept, or the user's own."""

from __future__ import annotations

import ssl

import httpx
import pytest
from cryptography import x509

from agent.tls import GENERATED_MARKER, _generate, ensure_certificate, fingerprint, local_names
from tests.helpers import agent_env, free_port, run_agent


def san_names(cert_path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def test_a_certificate_is_made_once_with_this_machines_names(tmp_path) -> None:
    first = ensure_certificate(tmp_path)
    assert first.generated
    dns, addresses = local_names()
    assert set(dns) | set(addresses) <= san_names(first.cert_path)
    assert "localhost" in dns and "127.0.0.1" in addresses
    assert oct(first.key_path.stat().st_mode & 0o777) == "0o600"
    before = fingerprint(first.cert_path)
    assert fingerprint(ensure_certificate(tmp_path).cert_path) == before, "kept, not remade"
    context = ssl.create_default_context(cafile=str(first.cert_path))
    assert context.cert_store_stats()["x509"] == 1


def test_your_own_certificate_is_used_as_it_is(tmp_path) -> None:
    made = ensure_certificate(tmp_path / "made")
    own = tmp_path / "own"
    own.mkdir()
    (own / "cert.pem").write_bytes(made.cert_path.read_bytes())
    (own / "key.pem").write_bytes(made.key_path.read_bytes())
    used = ensure_certificate(own)
    assert not used.generated
    assert fingerprint(used.cert_path) == fingerprint(made.cert_path)
    assert sorted(p.name for p in own.iterdir()) == ["cert.pem", "key.pem"]


def test_your_certificate_copied_over_a_made_one_is_never_replaced(tmp_path) -> None:
    ensure_certificate(tmp_path)  # made by the agent, marker written
    _generate(tmp_path / "cert.pem", tmp_path / "key.pem", ["my-server.lan"], ["10.1.2.3"])
    yours = fingerprint(tmp_path / "cert.pem")
    used = ensure_certificate(tmp_path)  # it names nothing of ours, yet it stays
    assert not used.generated
    assert fingerprint(used.cert_path) == yours


def test_a_made_certificate_that_no_longer_names_this_machine_is_remade(tmp_path) -> None:
    _generate(tmp_path / "cert.pem", tmp_path / "key.pem", ["old-name"], ["10.9.9.9"])
    before = fingerprint(tmp_path / "cert.pem")
    (tmp_path / GENERATED_MARKER).write_text(f"{before}\n")
    renewed = ensure_certificate(tmp_path)
    assert fingerprint(renewed.cert_path) != before
    assert "localhost" in san_names(renewed.cert_path)


def test_the_agent_serves_https_to_the_network_and_http_on_localhost(
    tmp_path, speaches_url: str, ollama_url: str
) -> None:
    tls_dir = tmp_path / "tls"
    env = agent_env(
        speaches_url,
        ollama_url,
        AGENT_HTTP_PORT=str(free_port()),
        TLS="on",
        TLS_DIR=str(tls_dir),
    )
    with run_agent(env) as agent:
        assert agent.base_url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(tls_dir / "cert.pem"))
        page = httpx.get(f"{agent.base_url}/", verify=trusted)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"{agent.local_url}/health").status_code == 200
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused
            httpx.get(f"{agent.base_url}/health")
        certificate_line = agent.wait_for_log("certificate")[-1]
        assert certificate_line["fingerprint_sha256"] == fingerprint(tls_dir / "cert.pem")
