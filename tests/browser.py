"""Debian's Chromium driven by Playwright (no browser download), as every browser test
launches it: headless, a fresh profile, a fake microphone playing a WAV file, sound
allowed without a click, no background traffic (this machine refuses it), no name
resolution, and ICE host candidates as plain addresses (not mDNS names)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, Playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}


def chromium_args(server_address: str, microphone: Path | None) -> list[str]:
    """``server_address``: the one address names may resolve to (the agent's)."""
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {server_address}",
    ]
    if server_address == "127.0.0.1":
        args.append("--allow-loopback-in-peer-connection")
    if microphone is None:
        return [*args, "--deny-permission-prompts"]
    return [
        *args,
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    ]


@contextmanager
def chromium(
    playwright: Playwright,
    profile: Path,
    microphone: Path | None,
    self_signed_ok: bool = False,
    server_address: str = "127.0.0.1",
    executable: Path = CHROMIUM,
) -> Iterator[BrowserContext]:
    """A fresh Chromium; ``microphone`` is the WAV it hears, or None to refuse the
    microphone; ``executable`` may be a wrapper that starts Chromium elsewhere (another
    network namespace)."""
    profile.mkdir()
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=str(executable),
        headless=True,
        args=chromium_args(server_address, microphone),
        viewport=DESKTOP,
        ignore_https_errors=self_signed_ok,  # what a person does by clicking through once
    )
    try:
        yield context
    finally:
        context.close()


def inbound_audio_script(pc: str) -> str:
    """A function for ``page.evaluate(script, timeout_ms)``: the first inbound audio
    statistics of the peer connection ``pc`` (a page expression) that show sound, or null
    if none came by the deadline. getStats() is asynchronous and wait_for_function does
    not await promises, so the page polls it itself."""
    return (
        """async (timeoutMs) => {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const pc = PC;
    for (const report of pc ? (await pc.getStats()).values() : []) {
      if (report.type !== "inbound-rtp" || report.kind !== "audio") continue;
      if (report.audioLevel > 0 || report.totalAudioEnergy > 0) {
        return { audioLevel: report.audioLevel, totalAudioEnergy: report.totalAudioEnergy };
      }
    }
    if (performance.now() > deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}"""
    ).replace("PC", pc)


@contextmanager
def idle_page(base_url: str, playwright: Playwright, profile: Path) -> Iterator[Page]:
    """The agent's page, loaded and idle (no microphone): for tests of its modules."""
    with chromium(playwright, profile, microphone=None) as context:
        page = context.pages[0]
        page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
        page.goto(base_url)
        expect(page.locator("#status")).to_have_text("Not connected")
        yield page


@contextmanager
def explained(page: Page, artifacts: Path, name: str) -> Iterator[None]:
    """On a failure, keep a screenshot and print what the page had received."""
    try:
        yield
    except Exception:
        page.screenshot(path=artifacts / f"{name}-failed.png")
        print(f"[page state] {page.evaluate('JSON.stringify(window.voiceAgent)')}")
        print(f"[heard] {page.evaluate('JSON.stringify(window.voiceAgent.heard)')}")
        raise
