"""``voice-agent pull-models`` (what ``make models`` runs), as a real process against the
stand-ins: progress per model, a second run that does nothing, clean stops that resume,
and a clear line when a backend is not there."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.helpers import (
    REPO_ROOT,
    STT_MODEL,
    TTS_MODEL,
    clear_standin_requests,
    free_port,
    ollama_pulls,
    speaches_downloads,
    without_agent_settings,
)
from tests.standins.process import start_standin, stop

MODEL = "llama3.2:3b"
SPEECH_MODELS = (STT_MODEL, TTS_MODEL)
RESUME_HINT = "run `make models` again to resume"

PULL_MODELS = [sys.executable, "-m", "agent", "pull-models"]


def pull_env(ollama: str, speaches: str) -> dict[str, str]:
    return without_agent_settings(
        OLLAMA_BASE_URL=ollama,
        SPEACHES_BASE_URL=speaches,
        OLLAMA_MODEL=MODEL,
        STT_MODEL=STT_MODEL,
        TTS_MODEL=TTS_MODEL,
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )


@dataclass
class Result:
    code: int
    output: str
    secs: float


def start_pull(env: dict[str, str]) -> subprocess.Popen[str]:
    """``voice-agent pull-models`` as `make models` runs it: no input, one output stream."""
    return subprocess.Popen(
        PULL_MODELS,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_pull(env: dict[str, str], timeout: float = 120.0) -> Result:
    started = time.monotonic()
    process = start_pull(env)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return Result(process.returncode, output, time.monotonic() - started)


@dataclass
class RunningPull:
    """A pull-models process whose output is read line by line as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    new_line: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def start(cls, env: dict[str, str]) -> RunningPull:
        running = cls(start_pull(env))
        threading.Thread(target=running._read, daemon=True).start()
        return running

    def _read(self) -> None:
        for line in self.process.stdout:
            with self.new_line:
                self.lines.append(line)
                self.new_line.notify_all()
        with self.new_line:
            self.lines.append("")  # EOF marker
            self.new_line.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = next((m for line in self.lines if (m := regex.search(line))), None)
            if match is None and self.lines and self.lines[-1] == "":
                raise AssertionError(f"exited without a line matching {pattern!r}:\n{self.output}")
            return match

        with self.new_line:
            match = self.new_line.wait_for(found, timeout)
        assert match, f"no line matching {pattern!r}; output so far:\n{self.output}"
        return match

    def wait(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout)
        with self.new_line:
            self.new_line.wait_for(lambda: self.lines and self.lines[-1] == "", 10)
        return code


def percents(output: str) -> list[int]:
    """The percentages of the Ollama model's plain progress lines, in order."""
    pattern = rf"^\s+{re.escape(MODEL)}\s+(\d+)%"
    return [int(m[1]) for m in re.finditer(pattern, output, re.MULTILINE)]


def resumed_at(output: str) -> int | None:
    match = re.search(r"^\s+resuming at (\d+)%", output, re.MULTILINE)
    return int(match[1]) if match else None


def test_first_run_shows_progress_and_a_second_run_is_a_no_op() -> None:
    one_second_pull = ["--model-size-bytes", "3000000", "--pull-bytes-per-sec", "3000000"]
    with (
        start_standin("tests.standins.ollama", "--pullable", MODEL, *one_second_pull) as (
            _,
            ollama,
        ),
        start_standin("tests.standins.speaches", "--pull-seconds", "0.3") as (_, speaches),
    ):
        first = run_pull(pull_env(ollama, speaches))
        assert first.code == 0, first.output
        assert "Traceback" not in first.output
        assert f"pulling {MODEL} from Ollama" in first.output
        shown = percents(first.output)
        assert len(shown) >= 5, f"too few progress lines:\n{first.output}"
        assert len(shown) <= 12, f"progress is printed every tenth, not per event:\n{first.output}"
        assert shown == sorted(set(shown)) and shown[-1] == 100, first.output
        assert re.search(rf"^✓ {re.escape(MODEL)} pulled: 3\.0 MB in ", first.output, re.M)
        for model_id in SPEECH_MODELS:
            assert f"downloading {model_id} with Speaches" in first.output
            done = re.search(rf"^✓ {re.escape(model_id)} done in ([\d.]+) s$", first.output, re.M)
            assert done and float(done[1]) >= 0.3, first.output
        assert first.output.rstrip().endswith("All models are present.")
        assert ollama_pulls(ollama) == [MODEL]
        assert speaches_downloads(speaches) == [f"/v1/models/{m}" for m in SPEECH_MODELS]

        clear_standin_requests(ollama, speaches)
        second = run_pull(pull_env(ollama, speaches))
        assert second.code == 0, second.output
        for model in (MODEL, *SPEECH_MODELS):
            assert f"✓ {model} already present\n" in second.output
        assert "All models are present." in second.output
        assert percents(second.output) == [] and "done in" not in second.output
        assert ollama_pulls(ollama) == [], "a second run must not pull"
        assert speaches_downloads(speaches) == [], "a second run must not download"
        # Start-up (Python, imports) is most of it; no pull, no retry wait.
        assert second.secs < 15, f"a no-op run took {second.secs:.1f} s"


def test_a_pull_broken_mid_stream_fails_clearly_and_a_rerun_resumes() -> None:
    breaks = ["--model-size-bytes", "3000000", "--pull-bytes-per-sec", "0"]
    breaks += ["--fail-pull-after-bytes", "1800000"]  # every pull request: 60 % of the model
    with (
        start_standin("tests.standins.ollama", "--pullable", MODEL, *breaks) as (_, ollama),
        start_standin("tests.standins.speaches", "--installed-all") as (_, speaches),
    ):
        first = run_pull(pull_env(ollama, speaches))
        assert first.code == 1, first.output
        assert "Traceback" not in first.output
        error_line = (
            f"✗ could not pull {MODEL}: max retries exceeded: unexpected EOF — {RESUME_HINT}"
        )
        assert f"\n{error_line}\n" in first.output, first.output
        assert "Not all models are present" in first.output
        for model_id in SPEECH_MODELS:
            assert f"✓ {model_id} already present" in first.output

        second = run_pull(pull_env(ollama, speaches))
        assert second.code == 0, second.output
        # The stand-in's first progress event of the second pull reports the bytes it kept.
        resumed = resumed_at(second.output)
        assert resumed is not None and resumed >= 50, second.output
        assert percents(second.output)[0] >= 50 and percents(second.output)[-1] == 100
        assert ollama_pulls(ollama) == [MODEL, MODEL]
        tags = httpx.get(f"{ollama}/api/tags").json()["models"]
        assert [entry["name"] for entry in tags] == [MODEL]


def test_ctrl_c_exits_130_with_a_resume_hint_and_a_rerun_completes() -> None:
    three_second_pull = ["--model-size-bytes", "3000000", "--pull-bytes-per-sec", "1000000"]
    with (
        start_standin("tests.standins.ollama", "--pullable", MODEL, *three_second_pull) as (
            _,
            ollama,
        ),
        start_standin("tests.standins.speaches", "--installed-all") as (_, speaches),
    ):
        running = RunningPull.start(pull_env(ollama, speaches))
        try:
            shown = int(running.wait_for_line(rf"^\s+{re.escape(MODEL)}\s+([1-9]\d*)%")[1])
            running.process.send_signal(signal.SIGINT)
            code = running.wait(timeout=30)
        finally:
            stop(running.process)
        assert code == 130, running.output
        assert "Traceback" not in running.output and "KeyboardInterrupt" not in running.output
        assert f"Interrupted: {RESUME_HINT}" in running.output
        assert "All models are present." not in running.output

        again = run_pull(pull_env(ollama, speaches))
        assert again.code == 0, again.output
        resumed = resumed_at(again.output)
        assert resumed is not None and resumed >= shown, again.output
        assert percents(again.output)[-1] == 100
        assert "All models are present." in again.output


def test_unreachable_backends_get_one_clear_line_each_and_exit_1() -> None:
    ollama = f"http://127.0.0.1:{free_port()}"
    speaches = f"http://127.0.0.1:{free_port()}"
    result = run_pull(pull_env(ollama, speaches))
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    for name, url in (("Ollama", ollama), ("Speaches", speaches)):
        assert f"waiting for {name} at {url}" in result.output, "it retries first"
        line = f"✗ cannot reach {name} at {url}: connection refused — is it running? (make up)"
        assert result.output.count(line) == 1, result.output
    assert result.secs < 30, f"the retries took {result.secs:.1f} s, not a few seconds"


def test_speaches_without_the_model_hub_is_told_apart_from_speaches_being_down() -> None:
    """Speaches 0.8.3 offline answers every download 500 and drops the connection: each
    model gets its own true line, not a 'lost Speaches … ReadError' for the next one."""
    with (
        start_standin("tests.standins.ollama", "--installed", MODEL) as (_, ollama),
        start_standin("tests.standins.speaches", "--offline") as (_, speaches),
    ):
        result = run_pull(pull_env(ollama, speaches))
        downloads = speaches_downloads(speaches)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    for model_id in SPEECH_MODELS:
        line = (
            f"✗ Speaches is up but could not download {model_id} (HTTP 500): the first "
            "download of a model needs internet access to the model hub"
        )
        assert result.output.count(line) == 1, result.output
    assert "lost Speaches" not in result.output and "ReadError" not in result.output
    assert "cannot reach" not in result.output
    assert downloads == [f"/v1/models/{m}" for m in SPEECH_MODELS], "each tried once"


def test_a_backend_that_comes_up_during_the_retries_is_used() -> None:
    port = free_port()
    ollama = f"http://127.0.0.1:{port}"
    with start_standin("tests.standins.speaches", "--installed-all") as (_, speaches):
        running = RunningPull.start(pull_env(ollama, speaches))
        try:
            running.wait_for_line(r"waiting for Ollama")
            args = ["--installed", MODEL, "--port", str(port)]
            with start_standin("tests.standins.ollama", *args):
                code = running.wait(timeout=60)
        finally:
            stop(running.process)
    assert code == 0, running.output
    assert f"✓ {MODEL} already present" in running.output
    assert "cannot reach" not in running.output


def _render(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: carriage returns redraw, ESC[K clears."""
    screen, line = [], ""
    for token in re.split(r"(\r\n|\r|\n|\x1b\[K)", raw):
        if token in ("\r\n", "\n"):
            screen.append(line)
            line = ""
        elif token == "\r":
            line = ""
        elif token != "\x1b[K":
            line += token
    return [*screen, line] if line else screen


def test_on_a_terminal_each_model_gets_one_line_redrawn_in_place() -> None:
    pull = ["--model-size-bytes", "3000000", "--pull-bytes-per-sec", "3000000"]
    with (
        start_standin("tests.standins.ollama", "--pullable", MODEL, *pull) as (_, ollama),
        start_standin(
            "tests.standins.speaches", "--installed", STT_MODEL, "--pull-seconds", "0.5"
        ) as (_, speaches),
    ):
        env = {**pull_env(ollama, speaches), "COLUMNS": "120", "TERM": "xterm"}
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            PULL_MODELS, cwd=REPO_ROOT, env=env, stdin=terminal, stdout=terminal, stderr=terminal
        )
        os.close(terminal)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([controller], [], [], deadline - time.monotonic())
                if not ready:
                    break
                try:
                    data = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            code = process.wait(timeout=30)
        finally:
            stop(process)
            os.close(controller)
    raw = b"".join(chunks).decode()
    assert code == 0, raw
    assert raw.count("\x1b[K") >= 5, f"the progress line is not redrawn:\n{raw!r}"
    shown = _render(raw)
    bars = [line for line in shown if line.startswith(f"  {MODEL} [")]
    assert len(bars) == 1, shown
    assert "100%" in bars[0] and "3.0 / 3.0 MB" in bars[0], bars
    assert f"✓ {TTS_MODEL} done in" in "\n".join(shown)
    assert not any("downloading" in line for line in shown), "the spinner line is cleared"
    assert len(shown) <= 8, shown
