"""The ASGI application ``tether serve`` runs: HTTP and WebSocket on one port.

HTTP goes to Django's WSGI application through a2wsgi, as before: Django's sync views
skip the per-middleware thread hops of its ASGI handler, which more than halves request
latency (see bench/control_latency.py), and a2wsgi, unlike uvicorn's own WSGI adapter,
streams request bodies to the app (a CSV upload goes to disk as it arrives, never whole
into memory) and applies backpressure to streamed responses (an export download is read
as it is sent). The few paths that stay open for long (event streams) are async
handlers in the route tables below, so they hold no WSGI thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import uvicorn
from a2wsgi import WSGIMiddleware

from tether.server.wsgi import application as wsgi_application  # sets up Django

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WSGI_THREADS = 10  # requests served at once (a long upload or download holds one)
UNKNOWN_WEBSOCKET_PATH = 4404


def _websocket_v1(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    from tether.server.websocket import endpoint

    return endpoint(scope, receive, send)


def _events_v1(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    from tether.server.sse import events_app

    return events_app(scope, receive, send)


# path (without a trailing slash) -> async handler; every other HTTP path is Django's
HTTP_ROUTES: dict[str, ASGIApp] = {"/api/v1/events": _events_v1}
WEBSOCKET_ROUTES: dict[str, ASGIApp] = {"/ws/v1": _websocket_v1}


class ProtocolRouter:
    """``http`` to the route table or else Django (WSGI), ``websocket`` to the route
    table (an unknown path is closed with 4404), ``lifespan`` answered."""

    def __init__(
        self,
        http: ASGIApp,
        http_routes: dict[str, ASGIApp],
        websocket_routes: dict[str, ASGIApp],
    ) -> None:
        self.http = http
        self.http_routes = http_routes
        self.websocket_routes = websocket_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            route = self.http_routes.get(_route_key(scope["path"])) if self.http_routes else None
            await (route or self.http)(scope, receive, send)
        elif kind == "websocket":
            route = self.websocket_routes.get(_route_key(scope["path"]))
            await (route or _no_such_websocket)(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)


def _route_key(path: str) -> str:
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


async def _no_such_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})  # (a close before accepting is a bare 403)
    await send(
        {
            "type": "websocket.close",
            "code": UNKNOWN_WEBSOCKET_PATH,
            "reason": f"no WebSocket endpoint at {scope['path'][:60]}; use /ws/v1",
        }
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolRouter(
    cast(ASGIApp, WSGIMiddleware(cast(Any, wsgi_application), workers=WSGI_THREADS)),
    HTTP_ROUTES,
    WEBSOCKET_ROUTES,
)


class Server(uvicorn.Server):
    """uvicorn's server, ending the open event streams when it stops: uvicorn waits for
    every open HTTP response before it exits, and a stream does not end by itself (its
    clients resume from the next server with Last-Event-ID)."""

    async def shutdown(self, sockets: Any = None) -> None:
        from tether.server.sse import streams

        streams.close_all()
        await super().shutdown(sockets)
