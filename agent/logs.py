"""Logging: structlog, pretty on a terminal and one JSON object a line in containers.

Pipecat logs through loguru; its records are forwarded into the same output so a
person reads one stream. Pipecat's own chatter is kept at WARNING unless the agent
runs at debug level.

What people say and what the assistant answers stay out of the log unless
LOG_TRANSCRIPTS is on (then agent/transcript_log.py logs them as "heard" and "said").
Pipecat's debug messages carry those words (the text sent to speech, for one), so they
are forwarded only then; its warnings quote words in square brackets ("not speaking
[...]"), which are blanked out while the setting is off. Tracebacks never show the values
of local variables (request bodies, SDP, words).
"""

from __future__ import annotations

import logging
import re
import sys

import structlog
from loguru import logger as loguru_logger


def configure_logging(
    level: str = "info", log_format: str = "auto", transcripts: bool = False
) -> None:
    numeric_level = logging.getLevelName(level.upper())
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    tracebacks = _TRACEBACKS_WITHOUT_LOCALS if use_json else _passthrough
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per line: the supervisor and its workers share one stderr, unbuffered in
        # containers (PYTHONUNBUFFERED), where print()'s separate write of the newline let
        # another process's line land in between.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _forward_loguru(debug=numeric_level <= logging.DEBUG, transcripts=transcripts)
    # Libraries that log through the standard library (aiohttp's server, on a malformed
    # request; aioice) come out in the same form, a traceback included in the JSON line.
    # aiohttp's access log would print a line per static file; our routes log what matters.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                tracebacks,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), handlers=[handler], force=True)


def _passthrough(_logger, _name, event_dict):
    return event_dict


_TRACEBACKS_WITHOUT_LOCALS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)

# Pipecat warns about these in every voice-only session; they say nothing useful here.
HARMLESS_PIPECAT_WARNINGS = (
    "No video transceiver is available",
    "No screen video transceiver is available",
    "Media stream error while reading the audio; clearing track.",  # every hang-up
)

# Pipecat quotes what is said or heard in square brackets: "Generating TTS [Hello.]".
QUOTED = re.compile(r"\[.*\]", re.DOTALL)


def _forward_loguru(debug: bool, transcripts: bool) -> None:
    log = structlog.get_logger("pipecat")

    def sink(message) -> None:
        record = message.record
        text = record["message"]
        if text in HARMLESS_PIPECAT_WARNINGS:
            return
        if not transcripts:
            text = QUOTED.sub("[…]", text)
        method = {
            "TRACE": log.debug,
            "DEBUG": log.debug,
            "INFO": log.info,
            "SUCCESS": log.info,
            "WARNING": log.warning,
            "ERROR": log.error,
            "CRITICAL": log.critical,
        }.get(record["level"].name, log.info)
        method(text, source=f"{record['name']}:{record['line']}")

    loguru_logger.remove()
    # Pipecat's debug messages may hold what was said: only when that may be logged.
    level = "DEBUG" if debug and transcripts else "WARNING"
    loguru_logger.add(sink, level=level, format="{message}")
