"""The Tether Python client: the REST API and the live event stream of a Tether server.

    from tether.client import Client

    with Client("http://127.0.0.1:8000", token) as tether:
        task = tether.submit("countdown", {"seconds": 5})
        for event in tether.events([task["id"]]):  # status and progress, live
            print(event)
            if event["kind"] == "status" and event["to"] in ("succeeded", "failed", "cancelled"):
                break
        done = tether.wait(task["id"], timeout=60)  # the final task, with its result

Failures raise ``tether.client.errors`` classes (``ApiError`` carries the API's
``status``, ``code`` and ``message``). No Django here: the client runs anywhere.
"""

from tether.client.client import Client
from tether.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotTetherServer,
    ServerError,
    StreamUnavailable,
    TetherError,
    TooManyRequests,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from tether.client.follow import FINAL, Follower
from tether.client.stream import EventStream, Notice

__all__ = [
    "FINAL",
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "EventStream",
    "Follower",
    "Forbidden",
    "NotFound",
    "NotTetherServer",
    "Notice",
    "ServerError",
    "StreamUnavailable",
    "TetherError",
    "TooManyRequests",
    "Unauthorized",
    "Unreachable",
    "WaitTimeout",
]
