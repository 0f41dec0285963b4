"""Named turn settings the benchmarks compare: environment overrides for the agent.

``default`` overrides nothing, so it always means the agent's own defaults, whatever they
are when the bench runs. Add a row here to compare another setting in every bench, or pass
``--env KEY=VALUE`` to ``python -m tests.bench.pauses`` for a one-off row.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import env_names


@dataclass(frozen=True)
class TurnSettings:
    name: str
    label: str
    env: tuple[tuple[str, str], ...] = ()


TURN_SETTINGS = {
    settings.name: settings
    for settings in (
        TurnSettings("default", "the agent's own defaults (no overrides)"),
        TurnSettings(
            "fast",
            "TURN_SILENCE_SECS=0 (the turn ends with the transcript), VAD_STOP_SECS=0.2",
            (("TURN_DETECTION", "silence"), ("TURN_SILENCE_SECS", "0"), ("VAD_STOP_SECS", "0.2")),
        ),
        TurnSettings(
            "quick-ears",
            "the defaults with VAD_STOP_SECS=0.1 and TURN_SILENCE_SECS=0.05: what shorter "
            "waits would gain, and cost in cut-offs",
            (("VAD_STOP_SECS", "0.1"), ("TURN_SILENCE_SECS", "0.05")),
        ),
        TurnSettings(
            "smart-turn",
            "TURN_DETECTION=smart-turn (Pipecat's local Smart Turn model)",
            (("TURN_DETECTION", "smart-turn"),),
        ),
        TurnSettings(
            "silence-0.6",
            "TURN_DETECTION=silence, TURN_SILENCE_SECS=0.6, VAD_STOP_SECS=0.2 "
            "(the defaults before issue 7)",
            (("TURN_DETECTION", "silence"), ("TURN_SILENCE_SECS", "0.6"), ("VAD_STOP_SECS", "0.2")),
        ),
    )
}


def ad_hoc(assignments: list[str], name: str = "custom") -> TurnSettings:
    """A row from ``KEY=VALUE`` strings; raises ValueError on a malformed pair or on a key
    the agent does not read (a typo would silently measure the defaults)."""
    known = set(env_names())
    env = []
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {assignment!r}")
        if key not in known:
            raise ValueError(f"{key} is not a setting of the agent")
        env.append((key, value))
    return TurnSettings(name, ", ".join(assignments), tuple(env))
