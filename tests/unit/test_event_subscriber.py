"""A subscriber's queue: status frames kept in order and never dropped (overflow closes
instead), progress replaced by the latest, replay pages ahead of live frames."""

from __future__ import annotations

import asyncio

import pytest
from django.db.models import Q

from tether.events.subscriber import Overflow, Replay, Subscriber


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def no_replay(replay: Replay) -> tuple[list[str], Replay | None]:
    raise AssertionError("no replay expected")


def test_status_frames_keep_their_order_and_progress_is_coalesced() -> None:
    async def main() -> list[str]:
        sub = Subscriber(1, False, asyncio.get_running_loop())
        sub.push_status("s1")
        sub.push_progress(7, "p7-a")
        sub.push_status("s2")
        sub.push_progress(7, "p7-b")  # replaces p7-a where it waits
        sub.push_progress(8, "p8")
        return await sub.frames(no_replay)

    assert run(main()) == ["s1", "p7-b", "s2", "p8"]


def test_too_many_waiting_status_frames_overflow() -> None:
    async def main() -> None:
        sub = Subscriber(1, False, asyncio.get_running_loop(), limit=3)
        for i in range(4):
            sub.push_status(f"s{i}")
        with pytest.raises(Overflow):
            await sub.frames(no_replay)

    run(main())


def test_only_the_first_push_after_a_take_asks_for_a_wake_up() -> None:
    async def main() -> list[bool]:
        sub = Subscriber(1, False, asyncio.get_running_loop())
        woken = [sub.push_status("a"), sub.push_status("b")]
        await sub.frames(no_replay)
        waiter = asyncio.ensure_future(sub.frames(no_replay))
        await asyncio.sleep(0)  # let it find the queue empty and wait
        woken.append(sub.push_status("c"))
        sub.wake()
        assert await asyncio.wait_for(waiter, 5) == ["c"]
        return woken

    assert run(main()) == [True, False, True]


def test_replay_pages_come_before_live_frames_queued_meanwhile() -> None:
    pages = {0: (["r1", "r2"], Replay(2, 5, Q())), 2: (["r3"], None)}

    async def load(replay: Replay) -> tuple[list[str], Replay | None]:
        return pages[replay.after]

    async def main() -> list[str]:
        sub = Subscriber(1, False, asyncio.get_running_loop())
        sub.push_replay(Replay(0, 5, Q()))
        sub.push_status("live6")
        out: list[str] = []
        while len(out) < 4:
            out += await sub.frames(load)
        return out

    assert run(main()) == ["r1", "r2", "r3", "live6"]
