"""The client behind a trusted proxy: ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239).

Only a peer inside ``--trusted-proxy`` may say who the client is; from anyone
else both headers are ignored, since any client can send them. Each proxy
appends the address it received the request from, so the list is read from
the right: trusted proxies are skipped, and the first address that is not a
trusted proxy is the client (the last untrusted hop). Everything left of it
was written by the client itself and is not believed. When every hop is a
trusted proxy, the leftmost is the client.

``X-Forwarded-For`` is read when present (what nginx and most balancers
send), else ``Forwarded``'s ``for=`` parameters (RFC 7239 §5.2, §6). A hop
that is not an IP address (``unknown``, an obfuscated ``_name``, garbage)
ends the walk: the client is then the last address before it that we could
read, or, for the rightmost hop, the peer itself.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: ``for=VALUE`` in one forwarded-element (RFC 7239 §4), VALUE a token or a quoted string.
_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)


@lru_cache(maxsize=8)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """``--trusted-proxy`` values, parsed once per setting."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def parse_ip(text: str) -> Address | None:
    """An address as a hop gives it: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``; else None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def forwarded_hops(x_forwarded_for: Sequence[str], forwarded: Sequence[str]) -> list[str]:
    """The hops as written, leftmost (the first client) first; X-Forwarded-For wins."""
    if x_forwarded_for:
        return [hop for value in x_forwarded_for for hop in value.split(",") if hop.strip()]
    hops = []
    for value in forwarded:
        for element in value.split(","):
            match = _FOR.search(element)
            if match:
                hops.append(match.group(1))
    return hops


def forwarded_client(peer_host: str, hops: Sequence[str], proxies: Sequence[Network]) -> str | None:
    """The client's address when ``peer_host`` is a trusted proxy and the hops name one, else None."""
    if not proxies or not hops:
        return None
    peer = parse_ip(peer_host)
    if peer is None or not trusted(peer, proxies):
        return None
    client: Address | None = None
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            break
        client = address
        if not trusted(address, proxies):
            break
    return None if client is None else sys.intern(str(client))
