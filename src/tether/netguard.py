"""Which hosts a user may make the server fetch from: public addresses only.

A URL a user hands the server (a pipeline's ``data_url``, a ``fetch`` step's input)
must not reach the server's own network: loopback, private, link-local (cloud
metadata at 169.254.169.254), multicast and reserved addresses are refused unless
``TETHER_FETCH_ALLOW_PRIVATE=1``. Every address a name resolves to is checked, and
the fetch connects to an address checked here (not to a second lookup), so a name
that resolves differently the second time cannot slip through.
"""

from __future__ import annotations

import ipaddress
import os
import socket

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def private_allowed() -> bool:
    return os.environ.get("TETHER_FETCH_ALLOW_PRIVATE", "").strip().lower() in ("1", "true", "yes")


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def resolve(host: str, port: int | None) -> list[Address]:
    """Every address ``host`` resolves to (raises OSError when it does not)."""
    infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def refused_host(host: str, port: int | None = None) -> str | None:
    """Why the server must not connect to ``host``, or None when it may."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError, ValueError) as exc:
        return f"cannot resolve {host!r} ({exc})"
    return refused_addresses(host, addresses)


def refused_addresses(host: str, addresses: list[Address]) -> str | None:
    if not addresses:
        return f"{host!r} has no address"
    if private_allowed():
        return None
    for address in addresses:
        if not is_public(address):
            return (
                f"{host!r} resolves to {address}, a private, loopback or link-local address "
                "(set TETHER_FETCH_ALLOW_PRIVATE=1 to allow it)"
            )
    return None
