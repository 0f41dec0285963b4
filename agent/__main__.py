"""Command line: ``voice-agent COMMAND`` or ``python -m agent COMMAND``.

Commands: serve (the default), check, healthcheck, pull-models, config.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import structlog
from aiohttp import web
from loguru import logger as loguru_logger

from agent.config import ConfigError, Settings, load_settings, read_env_file
from agent.logs import configure_logging
from agent.tls import ensure_certificate, fingerprint, server_context


def serve(settings: Settings) -> int:
    """The supervisor: the web server, and the worker processes that hold conversations."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="voice-agent-"))  # private: mode 0700
    try:
        # Every process's metrics go here and /metrics sums them; prometheus_client reads
        # this when it is first imported, so it is set before anything imports it (the
        # workers inherit it).
        metrics_dir = runtime_dir / "metrics"
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        asyncio.run(_serve(settings, runtime_dir))  # SIGINT, SIGTERM end it
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return 0


async def _serve(settings: Settings, runtime_dir: Path) -> None:
    from agent.server import create_app
    from agent.workers import WorkerPool

    log = structlog.get_logger("agent")
    app = create_app(settings, WorkerPool(settings, runtime_dir))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    if settings.https:
        certificate = ensure_certificate(settings.tls_dir)
        sites = [
            web.TCPSite(
                runner, settings.host, settings.port, ssl_context=server_context(certificate)
            ),
            web.TCPSite(runner, "127.0.0.1", settings.http_port),
        ]
        urls = [
            _url("https", settings.host, settings.port),
            _url("http", "127.0.0.1", settings.http_port),
        ]
        log.info("certificate", fingerprint_sha256=fingerprint(certificate.cert_path))
    else:
        sites = [web.TCPSite(runner, settings.host, settings.port)]
        urls = [_url("http", settings.host, settings.port)]
    try:
        for site in sites:
            await site.start()
        log.info(
            "listening",
            urls=urls,
            ollama=settings.ollama_base_url,
            speaches=settings.speaches_base_url,
            max_sessions=settings.max_sessions,
            workers=settings.workers,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def _url(scheme: str, host: str, port: int) -> str:
    shown = "<this machine>" if host in ("0.0.0.0", "::") else host
    return f"{scheme}://{shown}:{port}/"


def healthcheck(settings: Settings) -> int:
    """Exit 0 when the agent on this machine answers /health with 200 (for containers)."""
    if settings.https:
        url = f"http://127.0.0.1:{settings.http_port}/health"
    else:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        url = f"http://{host}:{settings.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1


def print_or_write_docs(args: argparse.Namespace) -> int:
    """``config``: the settings documentation, generated from ``agent.config``."""
    from agent import config_docs

    if args.env_example:
        print(config_docs.env_example(), end="")
    elif args.markdown:
        print(config_docs.settings_table() + "\n" + config_docs.compose_table(), end="")
    else:
        try:
            changed = config_docs.write_docs(Path.cwd())
        except (OSError, ValueError) as error:
            print(f"voice-agent: {error}", file=sys.stderr)
            return 1
        print("rewrote " + ", ".join(changed) if changed else "docs already up to date")
    return 0


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
        choices=["serve", "check", "healthcheck", "pull-models", "config"],
        help="serve (default): run the agent; check: validate the settings and exit; "
        "healthcheck: exit 0 if the running agent is healthy; pull-models: download the "
        "configured models into Ollama and Speaches, with progress (make models); "
        "config: print or write the settings documentation (make docs)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--env-example", action="store_true", help="config: print .env.example")
    output.add_argument(
        "--markdown", action="store_true", help="config: print the README's settings tables"
    )
    output.add_argument(
        "--write-docs",
        action="store_true",
        help="config: rewrite .env.example and the README tables in this directory",
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings from this .env file too (the environment wins over it)",
    )
    args = parser.parse_args(argv)
    wants_docs = args.env_example or args.markdown or args.write_docs
    if args.command == "config":
        if not wants_docs:
            parser.error("config needs --env-example, --markdown or --write-docs")
        return print_or_write_docs(args)  # needs no valid settings
    if wants_docs:
        parser.error("--env-example, --markdown and --write-docs go with the config command")
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
    configure_logging(
        settings.log_level, settings.log_format, transcripts=settings.log_transcripts == "on"
    )
    if args.command == "check":
        print("settings are valid")
        return 0
    if args.command == "healthcheck":
        return healthcheck(settings)
    if args.command == "pull-models":
        from agent.pull import pull_models  # imports Pipecat: only when needed

        try:
            return asyncio.run(pull_models(settings))
        except KeyboardInterrupt:  # before pull_models has its own handler in place
            return 130
    try:
        return serve(settings)
    except OSError as error:  # e.g. the port is taken
        structlog.get_logger("agent").error("cannot start", error=str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
