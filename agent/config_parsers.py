"""How each kind of setting is read from its raw text.

A parser takes the raw string and returns the value, or raises ``ValueError`` whose
message says what is allowed (``load_settings`` turns that into the user's error line).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T", int, float)

TURN_SCHEMES = ("turn:", "turns:")


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("a non-empty text")
    return raw.strip()


def optional_text(raw: str) -> str:
    return raw.strip()


def _in_range(kind: Callable[[str], T], low: T, high: T, allowed: str) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(allowed) from None
        if not low <= value <= high:  # also rejects nan
            raise ValueError(allowed)
        return value

    return parse


def int_range(low: int, high: int) -> Callable[[str], int]:
    return _in_range(int, low, high, f"a whole number from {low} to {high}")


def float_range(low: float, high: float) -> Callable[[str], float]:
    return _in_range(float, low, high, f"a number from {low:g} to {high:g}")


def usable_cores() -> int:
    """Cores this process may run on (a container's or taskset's CPU set, not the host's)."""
    return len(os.sched_getaffinity(0))


def count_or_cores(high: int) -> Callable[[str], int]:
    """A whole number, or ``auto`` for as many as there are usable cores."""
    whole = int_range(1, high)

    def parse(raw: str) -> int:
        if raw.strip().lower() == "auto":
            return min(usable_cores(), high)
        try:
            return whole(raw)
        except ValueError:
            raise ValueError(f"auto or a whole number from 1 to {high}") from None

    return parse


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    return parse


def http_url(raw: str) -> str:
    allowed = "an http:// or https:// URL such as http://localhost:8000"
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(allowed)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError(allowed) from None
    return raw.strip().rstrip("/")


def host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("an IP address or host name to listen on, such as 0.0.0.0")
    return value


def csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def ice_servers(raw: str) -> tuple[str, ...]:
    urls = csv(raw)
    for url in urls:
        if not url.startswith(("stun:", *TURN_SCHEMES)):
            raise ValueError("comma-separated stun:, turn: or turns: URLs (or empty for none)")
    return urls


def ip_addresses(raw: str) -> tuple[str, ...]:
    addresses = csv(raw)
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError("comma-separated IP addresses (or empty for all)") from None
    return addresses


def language(raw: str) -> str:
    from pipecat.transcriptions.language import Language

    try:
        return Language(raw.strip()).value
    except ValueError:
        raise ValueError("a language code such as en, de, fr or es") from None


def path(raw: str) -> Path:
    return Path(text(raw))


def is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


ACCESS_TOKEN_MIN_LENGTH = 8


def access_token(raw: str) -> str:
    """Empty (no token), or a token a browser can send in a header: visible ASCII only."""
    token = raw.strip()
    visible_ascii = all("!" <= character <= "~" for character in token)
    if token and (len(token) < ACCESS_TOKEN_MIN_LENGTH or not visible_ascii):
        raise ValueError(
            f"empty, or at least {ACCESS_TOKEN_MIN_LENGTH} letters, digits or ASCII symbols "
            "(no spaces or accents)"
        )
    return token
