"""Logging: structlog, pretty on a terminal and one JSON object a line in containers.

Pipecat logs through loguru; its records are forwarded into the same output so a
person reads one stream. Pipecat's own chatter is kept at WARNING unless the agent
runs at debug level.
"""

from __future__ import annotations

import logging
import sys

import structlog
from loguru import logger as loguru_logger


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    numeric_level = logging.getLevelName(level.upper())
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if use_json else _passthrough,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _forward_loguru("DEBUG" if numeric_level <= logging.DEBUG else "WARNING")
    # aiohttp's access log would print a line per static file; our routes log what matters.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)


def _passthrough(_logger, _name, event_dict):
    return event_dict


# Pipecat warns about these in every voice-only session; they say nothing useful here.
HARMLESS_PIPECAT_WARNINGS = (
    "No video transceiver is available",
    "No screen video transceiver is available",
    "Media stream error while reading the audio; clearing track.",  # every hang-up
)


def _forward_loguru(level: str) -> None:
    log = structlog.get_logger("pipecat")

    def sink(message) -> None:
        record = message.record
        if record["message"] in HARMLESS_PIPECAT_WARNINGS:
            return
        method = {
            "TRACE": log.debug,
            "DEBUG": log.debug,
            "INFO": log.info,
            "SUCCESS": log.info,
            "WARNING": log.warning,
            "ERROR": log.error,
            "CRITICAL": log.critical,
        }.get(record["level"].name, log.info)
        method(record["message"], source=f"{record['name']}:{record['line']}")

    loguru_logger.remove()
    loguru_logger.add(sink, level=level, format="{message}")
