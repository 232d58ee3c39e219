"""Login throttling keyed on the client's address, which only a trusted proxy may name.

DRF's default identity is the whole ``X-Forwarded-For`` header when one is sent, so a
made-up header gave every request a fresh bucket. Here the peer address (REMOTE_ADDR)
is the client, unless the peer is one of ``TETHER_TRUSTED_PROXIES``: then the client is
the right-most address in ``X-Forwarded-For`` that is not a trusted proxy (addresses
to the left of it were written by the client and prove nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import SimpleRateThrottle

Network = IPv4Network | IPv6Network


def _parse(text: str) -> IPv4Address | IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(addr: IPv4Address | IPv6Address | None, proxies: Iterable[Network]) -> bool:
    return addr is not None and any(addr in net for net in proxies)


def client_address(meta: dict[str, Any], proxies: Iterable[Network] | None = None) -> str:
    """The address a request came from, as far as this server can trust it."""
    if proxies is None:
        proxies = cast(tuple[Network, ...], settings.TETHER.get("TRUSTED_PROXIES", ()))
    proxies = tuple(proxies)
    peer = str(meta.get("REMOTE_ADDR") or "")
    if not proxies or not _trusted(_parse(peer), proxies):
        return peer
    client = peer
    for hop in reversed(str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")):
        addr = _parse(hop)
        if addr is None:
            break  # garbage from the client side: the last trusted hop answers for it
        client = str(addr)
        if not _trusted(addr, proxies):
            break
    return client


class AuthThrottle(SimpleRateThrottle):
    """TETHER_AUTH_RATE login/registration attempts per client address (API and admin
    share one bucket per address)."""

    scope = "auth"

    def get_rate(self) -> str:
        return str(settings.TETHER.get("AUTH_RATE", "60/min"))

    def get_ident(self, request: Any) -> str:
        return client_address(request.META)

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttled_login(
    login: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """``login`` (the admin's login view) with its POSTs counted against AuthThrottle:
    over the rate a POST is answered 429 without checking the password."""

    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            throttle = AuthThrottle()
            if not throttle.allow_request(cast(Any, request), cast(Any, None)):
                wait = throttle.wait()
                seconds = max(1, round(wait)) if wait is not None else 60
                response = HttpResponse(
                    f"Too many login attempts from your address; try again in {seconds} s.",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(seconds)
                return response
        return login(request, *args, **kwargs)

    return view
