"""The job journal: one JSON record per job in a state folder, so jobs outlive the server.

    journal = Journal(state_dir(settings.state_dir))
    journal.write(record)                  # atomic: temp file in the folder, then os.replace
    records = journal.load(keep=64)        # newest first; older files deleted, bad ones skipped

A record (`<folder>/<job id>.json`) holds the job's id, spec, submit time, state, its
progress events, and at the end its result ({"version", "card"}) or its error (status code
name and message). `JobManager` writes them for the jobs it runs and answers from them for
the jobs an earlier server ran.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from augserve.server.errors import (
    AlreadyExists,
    AugserveError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from augserve.server.jobs.progress import CANCELLED, DONE, FAILED, FINAL, RUNNING, ProgressEvent

log = logging.getLogger(__name__)

#: The error of a job whose server stopped while it ran.
INTERRUPTED = "interrupted: the server stopped while the job was running; nothing was written"
_EVENT_KEYS = set(ProgressEvent().as_dict())
# A stored error is raised again as the base class of its code: a subclass (SpecError,
# JobSpecError, ImportRefused ...) comes back as the InvalidArgument it is.
_ERRORS = {cls.code.name: cls for cls in (
    InvalidArgument, NotFound, AlreadyExists, PermissionDenied, ResourceExhausted,
    DeadlineExceeded, Unavailable, FailedPrecondition, Unauthenticated, Internal, Cancelled,
)}


def state_dir(path: str = "") -> Path:
    """The journal folder: `path`, else `$AUGSERVE_STATE/jobs`, else ~/.local/state/augserve/jobs.

    Not created here: `Journal.write` creates it with the first record, so a server that
    runs no job leaves no folder behind.
    """
    if path:
        return Path(path).expanduser()
    root = os.environ.get("AUGSERVE_STATE")
    return Path(root) / "jobs" if root else Path.home() / ".local" / "state" / "augserve" / "jobs"


def _owner_alive(owner: dict[str, Any]) -> bool:
    # Another live process on this host (a second server, a CLI run) owns the job: its
    # record is not ours to fail. A reused pid errs on the side of leaving a record alone.
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


@dataclasses.dataclass(frozen=True)
class Record:
    """One job as journaled.

    Attributes:
        id: the job id (also the file name).
        spec: `JobSpec.to_dict()`.
        submitted: submit time, seconds since the epoch (orders records across restarts).
        state: "running", "done", "failed" or "cancelled".
        events: its progress events (`ProgressEvent` dicts with their seq).
        result: {"version", "card"} once done, else None.
        error: {"code": status code name, "message": ...} once failed or cancelled.
        owner: {"host", "pid"} of the process that ran it.
    """

    id: str
    spec: dict[str, Any]
    submitted: float
    state: str = RUNNING
    events: tuple[dict[str, Any], ...] = ()
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    owner: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"host": socket.gethostname(), "pid": os.getpid()}
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Record:
        """Build a record from its JSON form; raises ValueError, KeyError or TypeError."""
        record = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
        record = dataclasses.replace(record, events=tuple(record.events))
        if not (
            record.state in (RUNNING, *FINAL) and isinstance(record.spec, dict)
            and isinstance(record.submitted, int | float) and isinstance(record.owner, dict)
            and all(isinstance(e, dict) and set(e) == _EVENT_KEYS for e in record.events)
        ):
            raise ValueError("a field of the wrong type, or an event of the wrong shape")
        if record.error is not None and not all(
            isinstance(record.error.get(key), str) for key in ("code", "message")
        ):
            raise ValueError(f"bad error {record.error!r}")
        return record

    def with_events(self, events: list[dict[str, Any]]) -> Record:
        """This record with `events` appended.

        A running event replaces the previous one of the same stage and epoch, so the
        record grows per epoch, not per batch.
        """
        kept = list(self.events)
        for event in events:
            last = kept[-1] if kept else None
            if last is not None and event["state"] == last["state"] == RUNNING and (
                (event["stage"], event["epoch"]) == (last["stage"], last["epoch"])
            ):
                kept[-1] = event
            else:
                kept.append(event)
        return dataclasses.replace(self, events=tuple(kept))

    def finished(self, result: dict[str, Any] | None, error: AugserveError | None) -> Record:
        """The final record: state from the outcome, a final event appended if none came."""
        state = DONE if error is None else CANCELLED if isinstance(error, Cancelled) else FAILED
        stored = None if error is None else {"code": error.code.name, "message": str(error)}
        record = dataclasses.replace(self, state=state, result=result, error=stored)
        if record.events and record.events[-1]["state"] in FINAL:
            return record
        seq = record.events[-1]["seq"] + 1 if record.events else 0
        event = ProgressEvent(seq=seq, state=state, stage=state, message=str(error or ""))
        return dataclasses.replace(record, events=(*record.events, event.as_dict()))

    def interrupted(self) -> Record:
        """A "running" record of a stopped server, as failed with `INTERRUPTED`.

        The claim "nothing was written" holds because `output.write_version` stages the
        version in a dot folder and renames it into place last: a killed job leaves no
        version, at most the ignored `.job-*` folder (and, for a new model, its
        config.json). Only a stop between that rename and the journal's final write
        escapes it: the message says so when the job had reached its "write" stage.
        """
        message = INTERRUPTED
        if self.events and self.events[-1]["stage"] in ("write", "done"):
            message = ("interrupted: the server stopped while the job was writing its version; "
                       f"check the versions of {self.spec.get('output_name')!r}")
        return self.finished(None, Internal(message))

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        """The stored events with seq > `seq`."""
        return [event for event in self.events if event["seq"] > seq]

    def outcome(self) -> dict[str, Any]:
        """The stored result ({"version", "card"}), or raise the stored error.

        The error is raised as the augserve exception a live job raises, so the client
        gets the same status code.
        """
        if self.error is not None:
            raise _ERRORS.get(self.error["code"], Internal)(self.error["message"])
        if self.result is None:
            raise Internal(f"job {self.id!r} has no result (state {self.state})")
        return self.result


class Journal:
    """The records of one state folder."""

    def __init__(self, folder: Path) -> None:
        """Journal into `folder` (created with the first write)."""
        self.folder = folder

    def write(self, record: Record) -> None:
        """Write `record` atomically (a crash leaves the old record or the new one).

        The journal is best effort: a failed write (read-only or full disk) is logged and
        the job goes on.
        """
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{record.id}.", suffix=".tmp")
            with os.fdopen(fd, "w") as file:
                json.dump(dataclasses.asdict(record), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.folder / f"{record.id}.json")
        except OSError as error:
            log.warning("job journal: cannot write job %s in %s: %s", record.id, self.folder, error)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def delete(self, job_id: str) -> None:
        """Remove the record of `job_id`, if any (a failure is logged)."""
        try:
            (self.folder / f"{job_id}.json").unlink(missing_ok=True)
        except OSError as error:
            log.warning("job journal: cannot delete job %s in %s: %s", job_id, self.folder, error)

    def load(self, keep: int) -> list[Record]:
        """The newest `keep` records, newest first.

        "Running" records of a stopped server are marked interrupted (and written). Older
        records are deleted; unreadable ones are logged and skipped; another live
        process's running jobs are left alone.
        """
        records = []
        for path in sorted(self.folder.glob("[!.]*.json")):
            try:
                record = Record.from_dict(json.loads(path.read_text()))
                if record.id != path.stem:
                    raise ValueError(f"the record's id is {record.id!r}")
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("job journal: skipping %s (%s: %s)", path, type(error).__name__, error)
                continue
            if record.state != RUNNING or not _owner_alive(record.owner):
                records.append(record)
        records.sort(key=lambda r: r.submitted, reverse=True)
        for old in records[keep:]:
            self.delete(old.id)
        kept = records[:keep]
        for index, record in enumerate(kept):
            if record.state == RUNNING:
                kept[index] = record.interrupted()
                self.write(kept[index])
        return kept
