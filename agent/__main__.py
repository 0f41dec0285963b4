"""Command line: ``voice-agent [serve|check|healthcheck]`` (``python -m agent`` too)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

import structlog
from aiohttp import web
from loguru import logger as loguru_logger

from agent.config import ConfigError, Settings, load_settings, read_env_file
from agent.ice import offer_only
from agent.logs import configure_logging


def serve(settings: Settings) -> int:
    from agent.server import create_app  # imports Pipecat: only when serving

    offer_only(settings.webrtc_host_addresses)
    log = structlog.get_logger("agent")
    log.info(
        "starting",
        url=f"http://{settings.host}:{settings.port}/",
        ollama=settings.ollama_base_url,
        speaches=settings.speaches_base_url,
        max_sessions=settings.max_sessions,
    )

    def announce(_text: str) -> None:
        log.info("listening", host=settings.host, port=settings.port)
        sys.stdout.flush()

    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=announce,
        access_log=None,
        shutdown_timeout=5,
    )
    return 0


def healthcheck(settings: Settings) -> int:
    """Exit 0 when the agent on this machine answers /health with 200 (for containers)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.port}/health", timeout=5) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="Private voice assistant: web page, WebRTC and one Pipecat pipeline "
        "per conversation. Settings come from the environment (see .env.example).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check", "healthcheck"],
        help="serve (default): run the agent; check: validate the settings and exit; "
        "healthcheck: exit 0 if the running agent is healthy",
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings from this .env file too (the environment wins over it)",
    )
    args = parser.parse_args(argv)
    loguru_logger.remove()  # Pipecat logs on import; hold it until logging is configured
    try:
        environ = dict(os.environ)
        if args.env_file:
            environ = {**read_env_file(args.env_file), **environ}
        settings = load_settings(environ)
    except OSError as error:
        print(f"voice-agent: cannot read {args.env_file}: {error.strerror}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"voice-agent: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "check":
        print("settings are valid")
        return 0
    if args.command == "healthcheck":
        return healthcheck(settings)
    try:
        return serve(settings)
    except OSError as error:  # e.g. the port is taken
        structlog.get_logger("agent").error("cannot start", error=str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
