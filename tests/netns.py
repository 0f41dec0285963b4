"""A home server and a phone on one small LAN: two network namespaces joined by a veth pair.

The home server is the test process's own namespace, which must be a private one with only
loopback (``scripts/isolated.sh`` makes it), so the pair is seen by nothing else. The phone
is a new namespace held open by a ``cat`` started with ``unshare -n``: it exits when its
stdin closes, so the namespace cannot outlive the tests, even if they are killed. Programs
run on the phone through ``nsenter``; the phone's link and address can be changed under them.
``lossy_home_and_phone`` joins the two through a relay instead, which loses and delays
packets as a bad network does.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import itertools
import json
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from random import Random

HOME_ADDRESS = "10.99.0.1"
PHONE_ADDRESS = "10.99.0.2"
PREFIX_LENGTH = 24
HOME_LINK = "veth-home"
PHONE_LINK = "veth-phone"

TOOLS = ("unshare", "nsenter", "ip")


def unavailable() -> str | None:
    """Why two namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    links = sorted(name for _, name in socket.if_nameindex())
    if links != ["lo"]:
        return f"not in a private network namespace (links: {links}); run via scripts/isolated.sh"
    return None


def _run(*command: str, netns_of: int | None = None) -> None:
    """Run ``command`` here, or in the network namespace of the process ``netns_of``."""
    if netns_of is not None:
        command = ("nsenter", "-t", str(netns_of), "-n", *command)
    subprocess.run(command, check=True, capture_output=True, text=True)


def _ip(*args: str) -> None:
    _run("ip", *args)


@dataclass
class Phone:
    """The phone's namespace: its one link to the home server, and how to run programs there."""

    pid: int  # the process holding the namespace open
    address: str = PHONE_ADDRESS

    def ip(self, *args: str) -> None:
        _run("ip", *args, netns_of=self.pid)

    def link_down(self) -> None:
        self.ip("link", "set", PHONE_LINK, "down")

    def link_up(self) -> None:
        self.ip("link", "set", PHONE_LINK, "up")

    def change_address(self, new: str) -> None:
        """A new lease on the same link: the old address goes, then the new one comes."""
        self.ip("address", "del", f"{self.address}/{PREFIX_LENGTH}", "dev", PHONE_LINK)
        self.ip("address", "add", f"{new}/{PREFIX_LENGTH}", "dev", PHONE_LINK)
        self.address = new

    def cut_path(self) -> None:
        """Packets between phone and home server go nowhere, while both stay on the network
        (a Wi-Fi that stalls): neither link nor address changes, so the browser stays online."""
        self.ip("route", "add", "blackhole", f"{HOME_ADDRESS}/32")
        _ip("route", "add", "blackhole", f"{self.address}/32")

    def restore_path(self) -> None:
        self.ip("route", "del", "blackhole", f"{HOME_ADDRESS}/32")
        _ip("route", "del", "blackhole", f"{self.address}/32")

    def wrapper(self, program: str, path: Path) -> Path:
        """An executable at ``path`` that runs ``program`` (with its arguments) on the phone."""
        path.write_text(f'#!/bin/sh\nexec nsenter -t {self.pid} -n {program} "$@"\n')
        path.chmod(0o755)
        return path


def _netns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@contextmanager
def home_and_phone() -> Iterator[Phone]:
    """This namespace as the home server (HOME_ADDRESS) and a new one as the phone
    (PHONE_ADDRESS), on one /24 joined by a veth pair; all of it removed on exit."""
    holder = subprocess.Popen(["unshare", "-n", "cat"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while _netns(holder.pid) == _netns("self"):  # until unshare has made the namespace
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not make a network namespace")
            time.sleep(0.01)
        phone = Phone(holder.pid)
        _ip("link", "add", HOME_LINK, "type", "veth", "peer", "name", PHONE_LINK)
        _ip("link", "set", PHONE_LINK, "netns", str(holder.pid))
        # IPv4 only: an IPv6 link-local address that turns up a moment later is a network
        # change to the browser (a page load fails with ERR_NETWORK_CHANGED), and it would
        # survive the phone's change of IPv4 address.
        _ip("link", "set", HOME_LINK, "addrgenmode", "none")
        phone.ip("link", "set", PHONE_LINK, "addrgenmode", "none")
        _ip("address", "add", f"{HOME_ADDRESS}/{PREFIX_LENGTH}", "dev", HOME_LINK)
        _ip("link", "set", HOME_LINK, "up")
        phone.ip("link", "set", "lo", "up")
        phone.ip("address", "add", f"{PHONE_ADDRESS}/{PREFIX_LENGTH}", "dev", PHONE_LINK)
        phone.link_up()
        yield phone
    finally:
        # Deleting one end deletes the pair; the phone's namespace goes with its holder.
        subprocess.run(["ip", "link", "del", HOME_LINK], capture_output=True)
        holder.stdin.close()
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


# --- a bad network: loss and jitter on the phone's link ------------------------------------
#
# `tc netem` would do this on the veth pair, but kernels built without sch_netem (this
# project's CI machines among them) have no qdisc that delays packets. So the lossy link
# is made in user space, the same everywhere: a TUN device in each namespace, and a relay
# process between the two that drops and delays packets as netem would (delays drawn
# per packet, so with enough jitter packets overtake one another).

HOME_TUN = "tun-home"
PHONE_TUN = "tun-phone"
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Impairment:
    """What the network does to packets going one way."""

    loss: float = 0.0  # share of packets lost, 0..1
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # standard deviation of the delay (normal, as netem's "normal")


CLEAN = Impairment()


def lossy_link_unavailable() -> str | None:
    """Why ``lossy_home_and_phone`` cannot run here, or None if it can."""
    if reason := unavailable():
        return reason
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun for the lossy link"
    return None


def _open_tun(name: str) -> int:
    """A TUN device called ``name`` in this thread's network namespace; it lasts as long as
    the returned descriptor is open somewhere."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    request = struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI)
    fcntl.ioctl(fd, _TUNSETIFF, request)
    return fd


def _set_up(link: str, address: str, run=_run) -> None:
    run("ip", "link", "set", link, "addrgenmode", "none")  # IPv4 only, as home_and_phone
    run("ip", "address", "add", f"{address}/{PREFIX_LENGTH}", "dev", link)
    run("ip", "link", "set", link, "up")


def enter_network_of(pid: int) -> None:
    """Move the calling thread into the network namespace of process ``pid``: sockets it
    opens from then on live there, and so do threads it starts (``asyncio.to_thread``
    included, which then cannot reach the stand-ins on this namespace's 127.0.0.1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/proc/{pid}/ns/net") as namespace:
        if libc.setns(namespace.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into the network of {pid} failed")


class LossyLink:
    """The phone's link to the home server, through the relay: ``upstream`` is what the
    phone sends (the agent's inbound audio), ``downstream`` what it receives."""

    def __init__(self, relay: subprocess.Popen[str]) -> None:
        self._relay = relay
        self.phone = Phone(relay.pid)

    def _ask(self, request: dict) -> dict:
        assert self._relay.stdin is not None and self._relay.stdout is not None
        self._relay.stdin.write(json.dumps(request) + "\n")
        self._relay.stdin.flush()
        answer = self._relay.stdout.readline()
        if not answer:
            raise RuntimeError("the link's relay has exited")
        return json.loads(answer)

    def impair(self, upstream: Impairment, downstream: Impairment = CLEAN) -> None:
        self._ask({"upstream": asdict(upstream), "downstream": asdict(downstream)})

    def counts(self) -> dict[str, dict[str, int]]:
        """Per direction, packets relayed so far: all, lost, and reordered (sent on before
        one that came earlier)."""
        return self._ask({"counts": True})


@contextmanager
def lossy_home_and_phone(seed: int = 1) -> Iterator[LossyLink]:
    """Like ``home_and_phone``, on a link whose loss and jitter ``LossyLink.impair`` sets
    (clean at first). ``seed`` makes the relay's random choices repeatable."""
    home_fd = _open_tun(HOME_TUN)
    try:
        _set_up(HOME_TUN, HOME_ADDRESS)
        relay = subprocess.Popen(
            ["unshare", "-n", sys.executable, "-m", "tests.netns", str(home_fd), str(seed)],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=[home_fd],
        )
    finally:
        os.close(home_fd)  # the relay's copy keeps the device
    try:
        link = LossyLink(relay)
        link.counts()  # answered once the phone's side is up
        yield link
    finally:
        assert relay.stdin is not None
        relay.stdin.close()  # the relay exits; its namespace and both devices go with it
        try:
            relay.wait(timeout=5)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()


def _relay(home_fd: int, seed: int) -> None:
    """The relay, inside the phone's new namespace: packets between the home server's TUN
    device (handed over as ``home_fd``) and the phone's, as the last ``impair`` says.
    Requests come as JSON lines on stdin, answers go to stdout; stdin's end ends it."""
    run = subprocess.run
    run(["ip", "link", "set", "lo", "up"], check=True)
    phone_fd = _open_tun(PHONE_TUN)
    _set_up(PHONE_TUN, PHONE_ADDRESS, run=lambda *cmd: run(cmd, check=True))
    random = Random(seed)
    ways = {home_fd: "downstream", phone_fd: "upstream"}
    other = {home_fd: phone_fd, phone_fd: home_fd}
    impairment = {"upstream": CLEAN, "downstream": CLEAN}
    counts = {way: {"packets": 0, "lost": 0, "reordered": 0} for way in ways.values()}
    latest = dict.fromkeys(ways.values(), 0.0)  # the latest release time given, per way
    due: list[tuple[float, int, int, bytes]] = []  # (release time, order, to, packet)
    order = itertools.count()
    selector = selectors.DefaultSelector()
    for fd in ways:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        for key, _ in selector.select(timeout):
            if key.fileobj is sys.stdin:
                line = sys.stdin.readline()
                if not line:
                    return
                request = json.loads(line)
                if "counts" in request:
                    print(json.dumps(counts), flush=True)
                    continue
                impairment = {way: Impairment(**request[way]) for way in impairment}
                print(json.dumps({"ok": True}), flush=True)
                continue
            source = key.fileobj
            assert isinstance(source, int)
            way = ways[source]
            while True:
                try:
                    packet = os.read(source, 65536)
                except BlockingIOError:
                    break
                counts[way]["packets"] += 1
                bad = impairment[way]
                if random.random() < bad.loss:
                    counts[way]["lost"] += 1
                    continue
                delay = max(0.0, random.gauss(bad.delay_ms, bad.jitter_ms)) / 1000
                release = time.monotonic() + delay
                if release < latest[way]:
                    counts[way]["reordered"] += 1  # it goes out before one sent earlier
                latest[way] = max(latest[way], release)
                heapq.heappush(due, (release, next(order), other[source], packet))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, target, packet = heapq.heappop(due)
            os.write(target, packet)


if __name__ == "__main__":
    _relay(int(sys.argv[1]), int(sys.argv[2]))
