"""A home server and a phone on one small LAN: two network namespaces joined by a veth pair.

The home server is the test process's own namespace, which must be a private one with only
loopback (``scripts/isolated.sh`` makes it), so the pair is seen by nothing else. The phone
is a new namespace held open by a ``cat`` started with ``unshare -n``: it exits when its
stdin closes, so the namespace cannot outlive the tests, even if they are killed. Programs
run on the phone through ``nsenter``; the phone's link and address can be changed under them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
