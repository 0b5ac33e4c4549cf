"""RayRuntime.watch: a lost cluster turns readiness off at once, then exits after the grace."""

from __future__ import annotations

import asyncio

from augserve.server.runtime import RAY_LOST_EXIT, RayRuntime


class ScriptedRuntime(RayRuntime):
    """Probes answer from a script (True: the GCS answered), then keep the last answer."""

    def __init__(self, answers: list[bool]) -> None:
        super().__init__()
        self.answers = answers

    def probe(self, timeout_s: float) -> bool:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def _watch(answers: list[bool], grace_s: float) -> tuple[list[str], list[int]]:
    events: list[str] = []
    exits: list[int] = []

    async def lost() -> None:
        events.append("lost")

    async def back() -> None:
        events.append("back")

    await asyncio.wait_for(
        ScriptedRuntime(answers).watch(lost, back, 0.001, grace_s, exits.append), 5)
    return events, exits


async def test_a_cluster_that_stays_away_ends_the_process_with_its_status():
    events, exits = await _watch([True, False, True, False, False], grace_s=0.05)
    assert events == ["lost", "back", "lost"]
    assert exits == [RAY_LOST_EXIT]


async def test_a_cluster_that_answers_again_within_the_grace_is_served_again():
    events: list[str] = []
    exits: list[int] = []

    async def note(what: str) -> None:
        events.append(what)

    runtime = ScriptedRuntime([False, False, True])
    task = asyncio.create_task(runtime.watch(lambda: note("lost"), lambda: note("back"),
                                             0.001, 60.0, exits.append))
    while events != ["lost", "back"]:
        await asyncio.sleep(0.005)
    task.cancel()
    assert exits == []


async def test_watch_nodes_spreads_only_after_a_join_and_for_the_settle_window(monkeypatch):
    reads = iter([{"a"}, {"a"}, {"a", "b"}, {"a", "b"}, {"a", "b"}] + [{"a", "b"}] * 100)
    monkeypatch.setattr(RayRuntime, "alive_nodes", staticmethod(lambda: next(reads)))
    calls: list[set[str]] = []

    async def on_join(alive: set[str]) -> int:
        calls.append(alive)
        if len(calls) == 1:
            raise RuntimeError("a failed move")  # logged; the watch goes on
        return 0

    watching = asyncio.create_task(RayRuntime().watch_nodes(on_join, 0.01, settle_s=0.1))
    await asyncio.sleep(0.5)
    watching.cancel()
    assert 2 <= len(calls) <= 15 and all(alive == {"a", "b"} for alive in calls)


async def test_watch_nodes_keeps_spreading_while_moves_happen_and_not_on_failed_reads(
        monkeypatch):
    def reads():
        yield {"a"}
        yield {"a", "b"}
        while True:
            yield {"a", "b"}
            yield None  # the GCS did not answer

    answers = reads()

    def alive_nodes() -> set[str]:
        alive = next(answers)
        if alive is None:
            raise ConnectionError("GCS unreachable")
        return alive

    monkeypatch.setattr(RayRuntime, "alive_nodes", staticmethod(alive_nodes))
    calls: list[float] = []

    async def on_join(alive: set[str]) -> int:
        assert alive == {"a", "b"}
        calls.append(asyncio.get_running_loop().time())
        return 1 if len(calls) <= 20 else 0  # moves long past the first settle window

    watching = asyncio.create_task(RayRuntime().watch_nodes(on_join, 0.01, settle_s=0.1))
    await asyncio.sleep(1.0)
    watching.cancel()
    # 20 moving calls (every other tick: the failed reads call nothing), then 0.1 s more
    assert 21 <= len(calls) <= 40, len(calls)
    assert calls[-1] - calls[0] > 0.3
