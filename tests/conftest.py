"""Shared fixtures: the stand-in backends and the agent, each a real process on 127.0.0.1.

Plain functions and constants are in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Playwright, sync_playwright

from tests.helpers import ARTIFACTS, LLM_MODEL, AgentProcess, agent_env, run_agent
from tests.standins.process import start_standin


@pytest.fixture(scope="session")
def speaches_url() -> Iterator[str]:
    with start_standin("tests.standins.speaches", "--installed-all", "--warm") as (_, url):
        yield url


@pytest.fixture(scope="session")
def ollama_url() -> Iterator[str]:
    with start_standin("tests.standins.ollama", "--installed", LLM_MODEL) as (_, url):
        yield url


@pytest.fixture(scope="module")
def agent(speaches_url: str, ollama_url: str) -> Iterator[AgentProcess]:
    with run_agent(agent_env(speaches_url, ollama_url)) as running:
        yield running


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright for the browser tests (they launch Debian's Chromium: tests/browser.py)."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
