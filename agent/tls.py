"""HTTPS for the local network: browsers give the microphone only to https:// pages.

If ``TLS_DIR`` holds ``cert.pem`` and ``key.pem`` the agent uses them. Otherwise it makes
a self-signed certificate there, naming this machine's host name and addresses, and
remakes it (only the one it made) when it is about to expire or the addresses changed.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import ifaddr
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = structlog.get_logger("tls")

CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
GENERATED_MARKER = "generated-by-voice-agent"
# Apple's platforms refuse server certificates valid for longer than 825 days.
VALID_DAYS = 825
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path
    generated: bool


def local_names() -> tuple[list[str], list[str]]:
    """This machine's DNS names and IP addresses, as a browser on the LAN may use them."""
    hostname = socket.gethostname()
    dns = list(dict.fromkeys([hostname, f"{hostname}.local", "localhost"]))
    addresses = ["127.0.0.1", "::1"]
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if address not in addresses and not address.startswith("fe80"):
                addresses.append(address)
    return dns, addresses


def ensure_certificate(tls_dir: Path) -> Certificate:
    tls_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = tls_dir / CERT_FILE, tls_dir / KEY_FILE
    marker = tls_dir / GENERATED_MARKER
    dns, addresses = local_names()
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not _made_by_us(marker, cert_path):
            log.info("using your certificate", path=str(cert_path), names=_names_in(cert))
            return Certificate(cert_path, key_path, False)
        if _still_good(cert, set(dns) | set(addresses)):
            return Certificate(cert_path, key_path, True)
        log.info("renewing the self-signed certificate", path=str(cert_path))
    _generate(cert_path, key_path, dns, addresses)
    marker.write_text(
        "This directory's certificate was made by the voice agent; delete it "
        "to make a new one, or put your own cert.pem and key.pem here.\n"
    )
    log.info("made a self-signed certificate", path=str(cert_path), names=dns + addresses)
    return Certificate(cert_path, key_path, True)


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_path, certificate.key_path)
    return context


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint, as browsers show it, so a person can check what they accept."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _made_by_us(marker: Path, cert_path: Path) -> bool:
    if not marker.exists():
        return False
    recorded = marker.read_text().split("\n", 1)[0].strip()
    return recorded == fingerprint(cert_path)


def _names_in(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _still_good(cert: x509.Certificate, wanted: set[str]) -> bool:
    renew_at = cert.not_valid_after_utc - datetime.timedelta(days=RENEW_BEFORE_DAYS)
    return datetime.datetime.now(datetime.UTC) < renew_at and wanted <= set(_names_in(cert))


def _generate(cert_path: Path, key_path: Path, dns: list[str], addresses: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, dns[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Voice agent (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(name) for name in dns] + [
        x509.IPAddress(ipaddress.ip_address(address)) for address in addresses
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.write_bytes(key_bytes)
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
