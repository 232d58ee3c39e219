"""Login throttling over real HTTP: keyed on the peer address, forwarded addresses
honoured only from TETHER_TRUSTED_PROXIES, the admin login in the same bucket."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.acceptance.conftest import PASSWORD, ServerFactory, assert_error, free_port, run_tether

RATE = "3/min"
CREDS = {"username": "carol", "password": "wrong-password-1"}


def admin_login(http: httpx.Client) -> httpx.Response:
    page = http.get("/admin/login/")
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text
    return http.post(
        "/admin/login/?next=/admin/",
        data={"username": "carol", "password": "wrong", "csrfmiddlewaretoken": token[1]},
    )


def test_made_up_forwarded_for_does_not_reset_the_limit(server: ServerFactory) -> None:
    srv = server(workers=1, TETHER_AUTH_RATE=RATE)
    with srv.client() as anon:
        answers = [
            anon.post(
                "/auth/token", json=CREDS, headers={"X-Forwarded-For": f"198.51.100.{i}"}
            ).status_code
            for i in range(10)
        ]
        assert answers[:3] == [401, 401, 401], answers
        assert set(answers[3:]) == {429}, answers
        r = anon.post("/auth/register", json={"username": "dave", "password": PASSWORD})
        assert_error(r, 429, "throttled")


def test_a_trusted_proxy_names_the_client(server: ServerFactory) -> None:
    srv = server(workers=1, TETHER_AUTH_RATE=RATE, TETHER_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1")
    with srv.client() as proxy:

        def login(forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return proxy.post("/auth/token", json=CREDS, headers=headers).status_code

        # the client writes what it likes to the left; the right-most untrusted hop counts
        assert [login(f"{i}.{i}.{i}.{i}, 203.0.113.7") for i in range(1, 5)] == [401] * 3 + [429]
        assert login("203.0.113.7, 10.1.2.3") == 429  # through a second trusted proxy
        assert login("203.0.113.8") == 401  # another client has its own bucket
        assert [login("203.0.113.9") for _ in range(3)] == [401, 401, 401]
        assert login("203.0.113.9") == 429


def test_admin_login_is_throttled_with_the_api(server: ServerFactory) -> None:
    srv = server(workers=1, TETHER_AUTH_RATE=RATE)
    with httpx.Client(base_url=srv.url, timeout=15) as http:
        for _ in range(2):
            r = admin_login(http)
            assert r.status_code == 200 and "correct username and password" in r.text, r.text
        assert srv.client().post("/auth/token", json=CREDS).status_code == 401
        r = admin_login(http)  # the fourth attempt from this address
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert "Too many login attempts" in r.text
        with srv.client() as anon:
            assert_error(anon.post("/auth/token", json=CREDS), 429, "throttled")


def test_a_bad_trusted_proxies_value_is_one_line(tmp_path: Path) -> None:
    r = run_tether(
        tmp_path, "serve", "--port", str(free_port()), TETHER_TRUSTED_PROXIES="proxy.example"
    )
    assert r.returncode == 2, r
    assert r.stderr.strip() == (
        "tether: TETHER_TRUSTED_PROXIES: 'proxy.example' is not an IP address or network "
        "(e.g. 10.0.0.0/8)"
    ), r.stderr
