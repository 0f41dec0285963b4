"""Which local addresses WebRTC offers to browsers.

aioice gathers a host candidate on every interface and has no option to choose them.
On a home server with Docker bridges and VPNs that means many useless candidates, and
in tests it means none (aioice skips 127.0.0.1). ``WEBRTC_HOST_ADDRESSES`` narrows the
list; aioice looks the function up at gathering time, so replacing it is enough.
"""

from __future__ import annotations

import aioice.ice


def offer_only(addresses: tuple[str, ...]) -> None:
    """Make every new peer connection gather host candidates on ``addresses`` only."""
    if not addresses:
        return
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            address
            for address in chosen
            if (":" in address and use_ipv6) or (":" not in address and use_ipv4)
        ]

    aioice.ice.get_host_addresses = host_addresses
