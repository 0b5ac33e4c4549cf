"""The job journal: a new JobManager (a restarted server) answers for an earlier one's jobs."""

import json
import logging
import os
import socket

import pytest

from augserve.server.errors import Cancelled, Internal, NotFound
from augserve.server.jobs.journal import INTERRUPTED, Journal, Record, state_dir
from augserve.server.jobs.progress import ProgressEvent
from augserve.server.jobs.runner import JobManager
from augserve.server.jobs.settings import JobSettings
from augserve.server.jobs.specs import Finetune, JobSpec, ModelRef

from .conftest import TINY


def _spec(root, epochs=1):
    return JobSpec(ModelRef(architecture_kwargs=TINY), (Finetune(epochs, 1e-2),), "digits",
                   str(root), "journaled", measure_latency=False)


def _settings(tmp_path, **extra):
    return JobSettings(state_dir=str(tmp_path / "state"), **extra)


def _event(seq, state="running", stage="finetune", epoch=1):
    return ProgressEvent(seq=seq, state=state, stage=stage, epoch=epoch, epochs=3).as_dict()


def _finished(job_id, submitted):
    return Record(job_id, {}, submitted, "done", (_event(0, "done", "done", 0),),
                  {"version": 1, "card": {}})


async def test_a_finished_job_is_answered_by_a_new_manager(ray_session, tmp_path):
    first = JobManager(_settings(tmp_path))
    job_id = first.submit(_spec(tmp_path))
    live = [event async for event in first.watch(job_id)]
    result = await first.result(job_id)
    assert [event async for event in first.watch(job_id, live[-1]["seq"])] == []
    first.get(job_id).recorder.join(30)

    second = JobManager(_settings(tmp_path))
    assert await second.result(job_id) == json.loads(json.dumps(result))
    replay = [event async for event in second.watch(job_id)]
    assert replay[-1] == live[-1] and replay[-1]["state"] == "done"
    assert all(event == live[event["seq"]] for event in replay)
    assert {event["stage"] for event in replay} == {event["stage"] for event in live}
    assert [event async for event in second.watch(job_id, replay[-2]["seq"])] == replay[-1:]
    await second.cancel(job_id)  # a finished job ignores Cancel
    assert second.result_sync(job_id)["version"] == result["version"] == 1


async def test_a_cancelled_job_is_still_cancelled_after_a_restart(ray_session, tmp_path):
    first = JobManager(_settings(tmp_path))
    job_id = first.submit(_spec(tmp_path, epochs=200))
    await first.cancel(job_id)  # the task stops at its first check
    with pytest.raises(Cancelled):
        await first.result(job_id)
    first.get(job_id).recorder.join(30)

    second = JobManager(_settings(tmp_path))
    with pytest.raises(Cancelled, match="nothing was written"):
        await second.result(job_id)
    assert [event async for event in second.watch(job_id)][-1]["state"] == "cancelled"
    assert not (tmp_path / "journaled").exists()


@pytest.mark.parametrize("stage, words", [
    ("finetune", INTERRUPTED),
    ("write", "interrupted: the server stopped while the job was writing its version; "
              "check the versions of 'out'"),
])
async def test_a_job_left_running_is_failed_as_interrupted(tmp_path, stage, words):
    journal = Journal(tmp_path / "state")
    journal.write(Record("a1", {"output_name": "out"}, 1.0,
                         events=(_event(0, stage="load"), _event(1, stage=stage))))
    manager = JobManager(_settings(tmp_path))
    with pytest.raises(Internal) as error:
        await manager.result("a1")
    assert str(error.value) == words
    events = [event async for event in manager.watch("a1", 0)]
    assert [e["seq"] for e in events] == [1, 2]
    assert events[-1]["state"] == "failed" and events[-1]["message"] == words
    stored = json.loads((tmp_path / "state" / "a1.json").read_text())
    assert stored["state"] == "failed" and stored["error"] == {"code": "INTERNAL",
                                                               "message": words}


def test_a_running_job_of_another_live_process_is_left_alone(tmp_path):
    journal = Journal(tmp_path / "state")
    owner = {"host": socket.gethostname(), "pid": os.getppid()}
    journal.write(Record("b2", {}, 1.0, events=(_event(0),), owner=owner))
    before = (tmp_path / "state" / "b2.json").read_text()
    with pytest.raises(NotFound):
        JobManager(_settings(tmp_path)).get("b2")
    assert (tmp_path / "state" / "b2.json").read_text() == before


def test_unreadable_records_are_logged_and_skipped(tmp_path, caplog):
    folder = tmp_path / "state"
    Journal(folder).write(_finished("good", 1.0))
    (folder / "torn.json").write_text('{"id": "torn", "spe')
    (folder / "partial.json").write_text(json.dumps({"id": "partial", "state": "done"}))
    (folder / "odd.json").write_text(json.dumps({**json.loads((folder / "good.json").read_text()),
                                                  "id": "odd", "error": {"code": 3}}))
    with caplog.at_level(logging.WARNING, logger="augserve.server.jobs.journal"):
        manager = JobManager(_settings(tmp_path))
    assert manager.result_sync("good")["version"] == 1
    for name in ("torn", "partial", "odd"):
        assert f"{name}.json" in caplog.text
        with pytest.raises(NotFound):
            manager.get(name)


def test_keep_finished_bounds_the_records_kept(tmp_path):
    journal = Journal(tmp_path / "state")
    for index in range(5):
        journal.write(_finished(f"j{index}", float(index)))
    manager = JobManager(_settings(tmp_path, keep_finished=2))
    assert sorted(p.stem for p in (tmp_path / "state").glob("*.json")) == ["j3", "j4"]
    assert manager.events_sync("j4", -1, 0.0)[-1]["state"] == "done"
    with pytest.raises(NotFound):
        manager.get("j2")


def test_the_default_folder_follows_augserve_state_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGSERVE_STATE", str(tmp_path / "s"))
    assert state_dir() == tmp_path / "s" / "jobs"
    monkeypatch.delenv("AUGSERVE_STATE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_dir() == tmp_path / ".local" / "state" / "augserve" / "jobs"
    assert state_dir(str(tmp_path / "x")) == tmp_path / "x"
    assert not (tmp_path / ".local").exists()
