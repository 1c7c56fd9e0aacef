"""Lanes: strictly ordered within a key, parallel across keys, nothing dropped."""

from __future__ import annotations

import asyncio

import pytest

from core.lanes import Lanes


class Recorder:
    """Work that logs when each item starts and ends, and waits for its gate in between."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}

    def gate(self, item: str) -> asyncio.Event:
        return self.gates.setdefault(item, asyncio.Event())

    def began(self, item: str) -> asyncio.Event:
        return self.started.setdefault(item, asyncio.Event())

    async def work(self, key: str, item: str) -> None:
        self.log.append(("start", item))
        self.began(item).set()
        await self.gate(item).wait()
        self.log.append(("end", item))
        if item.startswith("fail"):
            raise ValueError(item)


def _lanes(recorder: Recorder) -> Lanes[str, str]:
    return Lanes(recorder.work, lambda key: f"lane-{key}")


async def test_one_key_runs_in_order_while_other_keys_run_alongside() -> None:
    rec = Recorder()
    lanes = _lanes(rec)
    loop = asyncio.get_running_loop()
    futures = {item: loop.create_future() for item in ("a1", "a2", "b1")}
    for item, future in futures.items():
        lanes.submit(item[0], item, future)
    await rec.began("a1").wait()
    await rec.began("b1").wait()  # b's lane does not wait for a's
    assert ("start", "a2") not in rec.log
    rec.gate("b1").set()
    await futures["b1"]
    assert ("start", "a2") not in rec.log  # a2 still waits for a1, not for b1
    rec.gate("a2").set()
    rec.gate("a1").set()
    await asyncio.gather(*futures.values())
    a_events = [event for event in rec.log if event[1].startswith("a")]
    assert a_events == [("start", "a1"), ("end", "a1"), ("start", "a2"), ("end", "a2")]
    assert len(lanes) == 0 and lanes.tasks() == []  # dry lanes are forgotten


async def test_failing_work_resolves_its_future_and_the_lane_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    lanes = _lanes(rec)
    loop = asyncio.get_running_loop()
    failing, after = loop.create_future(), loop.create_future()
    rec.gate("fail").set()
    rec.gate("after").set()
    lanes.submit("k", "fail", failing)
    lanes.submit("k", "after", after)
    await asyncio.gather(failing, after)
    assert failing.result() is None
    assert rec.log[-1] == ("end", "after")
    assert "unhandled error in a lane's work" in caplog.text


async def test_cancelled_lane_cancels_what_waits_in_it() -> None:
    rec = Recorder()
    lanes = _lanes(rec)
    loop = asyncio.get_running_loop()
    running, waiting = loop.create_future(), loop.create_future()
    lanes.submit("k", "running", running)
    lanes.submit("k", "waiting", waiting)
    await rec.began("running").wait()
    (task,) = lanes.tasks()
    assert task.get_name() == "lane-k"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert running.done() and running.result() is None
    assert waiting.cancelled()  # nothing may wait forever
    assert ("start", "waiting") not in rec.log
