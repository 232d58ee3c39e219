"""Which address a request is counted against (login throttling)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from tether.api.throttling import client_address
from tether.server.config import env_networks

PROXIES = (ip_network("10.0.0.0/8"), ip_network("::1/128"))


@pytest.mark.parametrize(
    "remote,xff,client",
    [
        ("203.0.113.1", None, "203.0.113.1"),
        ("203.0.113.1", "1.2.3.4", "203.0.113.1"),  # untrusted peer: header ignored
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.2", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the left part is the client's own
        ("10.0.0.2", "1.2.3.4, 10.9.9.9", "1.2.3.4"),  # two trusted proxies
        ("10.0.0.2", "10.9.9.9, 10.8.8.8", "10.9.9.9"),  # all trusted: the first one
        ("10.0.0.2", "1.2.3.4, not-an-ip", "10.0.0.2"),  # garbage: the proxy answers
        ("10.0.0.2", "1.2.3.4:5678", "1.2.3.4"),
        ("::1", "[2001:db8::1]:443", "2001:db8::1"),
        ("::1", "2001:db8::2", "2001:db8::2"),
    ],
)
def test_client_address(remote: str, xff: str | None, client: str) -> None:
    meta = {"REMOTE_ADDR": remote, **({"HTTP_X_FORWARDED_FOR": xff} if xff else {})}
    assert client_address(meta, PROXIES) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}
    assert client_address(meta, ()) == "127.0.0.1"


def test_env_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_TRUSTED_PROXIES", " 10.0.0.5, 192.168.0.0/16,, ::1 ")
    assert [str(n) for n in env_networks("TETHER_TRUSTED_PROXIES")] == [
        "10.0.0.5/32",
        "192.168.0.0/16",
        "::1/128",
    ]
    monkeypatch.setenv("TETHER_TRUSTED_PROXIES", "10.0.0.0/8,proxy.example")
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an IP address"):
        env_networks("TETHER_TRUSTED_PROXIES")
