"""Child processes that leave nothing behind: each in a session of its own, stopped as a group.

Every bench and the test fixtures start servers, Ray clusters and workers through
`ProcessGroup`. The child gets a session (so a process group) of its own, which keeps
a Ctrl-C at the terminal away from it: only the bench gets the SIGINT, and its
cleanup stops the child in order. `stop()` sends SIGTERM to the child (a server drains
and shuts its Ray down), waits a grace period, then SIGTERM and, after a short wait,
SIGKILL to whatever is left of its group and of its descendants (Ray's reaper moves
to a group of its own). A second Ctrl-C during that wait skips straight to SIGKILL.

`exit_on_sigterm()` makes SIGTERM in the bench raise `SystemExit`, so that the same
cleanup runs on SIGTERM as on Ctrl-C, on failure and on success.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

GRACE_S = 30.0  # how long a child may take over SIGTERM before its tree is killed
LEFTOVER_GRACE_S = 5.0  # how long what is left of the tree gets between SIGTERM and SIGKILL


def child_env(omp_wait_policy: str | None = "PASSIVE", **extra: str) -> dict[str, str]:
    """This process's environment for a bench child, with `extra` on top.

    Drops RAY_ADDRESS (a child starts a fresh Ray, never joins one that happens to be
    running), turns off Ray's usage stats, and sets OMP_WAIT_POLICY to
    `omp_wait_policy` unless the caller set it (None leaves it unset).
    """
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if omp_wait_policy and "OMP_WAIT_POLICY" not in os.environ:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    env.update(extra)
    return env


class ProcessGroup:
    """`command` in a new session; `stop()` (or leaving the `with` block) stops all of it.

    Args:
        command: the program and its arguments.
        env: its environment (default: `child_env()`).
        stdin, stdout, stderr, text: as for `subprocess.Popen`.

    Example:
        >>> with ProcessGroup(["sleep", "60"]) as group:  # doctest: +SKIP
        ...     group.process.pid
    """

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: bool = False,
    ) -> None:
        self.command = list(command)
        self.process = subprocess.Popen(
            self.command, env=child_env() if env is None else env, stdin=stdin, stdout=stdout,
            stderr=stderr, text=text, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """The child's pid, which is also its session and process group id."""
        return self.process.pid

    def descendants(self) -> list[psutil.Process]:
        """The child's living descendants (empty once it is gone)."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []

    def stop(self, grace_s: float | None = None) -> int:
        """SIGTERM the child, then stop every process of its group and tree; its exit status.

        The child gets `grace_s` (default `GRACE_S`) to exit; then it and whatever is left
        of its group and of its descendants get SIGTERM, `LEFTOVER_GRACE_S` more, and SIGKILL.
        """
        grace_s = GRACE_S if grace_s is None else grace_s
        tree = self.descendants()
        try:
            if self.process.poll() is None:
                with suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.process.wait(grace_s)
            left = self._left(tree)
            for process in left:
                with suppress(psutil.Error):
                    process.terminate()
            psutil.wait_procs(left, timeout=LEFTOVER_GRACE_S)
        finally:
            self.kill(tree)
        return self.process.returncode

    def kill(self, tree: list[psutil.Process] | None = None) -> None:
        """SIGKILL the child's group and every process of `tree` (default: its descendants)."""
        left = self._left(self.descendants() if tree is None else tree)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for process in left:
            with suppress(psutil.Error):
                process.kill()
        self.process.wait()
        psutil.wait_procs(left, timeout=LEFTOVER_GRACE_S)

    def _left(self, tree: list[psutil.Process]) -> list[psutil.Process]:
        """Living processes of `tree` and of the child's group, the child itself included."""
        left = {process.pid: process for process in tree if is_alive(process)}
        for process in psutil.process_iter():
            with suppress(psutil.Error, ProcessLookupError):  # it may exit while we look
                if os.getpgid(process.pid) == self.pid and is_alive(process):
                    left.setdefault(process.pid, process)
        return list(left.values())

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_alive(process: psutil.Process) -> bool:
    """Whether `process` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run(
    command: Sequence[str], timeout_s: float, env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run `command` to its end in a group of its own, its stdout and stderr captured as text.

    Whatever stops the wait (the timeout, an exception, Ctrl-C, SIGTERM under
    `exit_on_sigterm`) stops its whole group too.

    Raises:
        subprocess.CalledProcessError: with `check`, it exited non-zero.
        subprocess.TimeoutExpired: it ran past `timeout_s`.
    """
    group = ProcessGroup(command, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = group.process.communicate(timeout=timeout_s)
    finally:
        group.stop()
    done = subprocess.CompletedProcess(group.command, group.process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


@contextmanager
def serving(
    command: Sequence[str], ready_file: Path, log: Path, env: dict[str, str] | None = None,
    name: str = "the server", timeout_s: float = 240.0, grace_s: float = 60.0,
) -> Iterator[tuple[int, ProcessGroup]]:  # fmt: skip
    """Run a server until the block ends; yields (its port, its group) once it is ready.

    The server writes its port to `ready_file` when it is ready. On leaving the block
    the whole group is stopped whatever happened; after a block that ended normally,
    the server must also have exited 0 on SIGTERM within `grace_s`.

    Raises:
        RuntimeError: it exited or ran `timeout_s` without becoming ready, or it did not
            exit 0 on SIGTERM (the message holds its log).
    """
    with log.open("w") as out:
        group = ProcessGroup(command, env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: bool(ready_file.exists() and ready_file.read_text().strip()), timeout_s,
            lambda: group.process.poll() is not None, f"{name} to write {ready_file}",
            log,
        )  # fmt: skip
        yield int(ready_file.read_text()), group
    except BaseException:
        group.stop(grace_s)
        raise
    code = group.stop(grace_s)
    if code != 0:
        raise RuntimeError(f"{name} exited {code} on SIGTERM; log:\n{log.read_text()}")


def wait_for(
    condition: Callable[[], bool], timeout_s: float, failed: Callable[[], bool] | None = None,
    what: str = "a condition",
    log: Path | None = None, interval_s: float = 0.1,
) -> None:  # fmt: skip
    """Poll `condition()` until it is true.

    Raises:
        RuntimeError: `failed()` became true first, or `timeout_s` passed (the message
            names `what` and holds the tail of `log`).
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if (failed is not None and failed()) or time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"gave up waiting for {what}; log:\n{tail}")
        time.sleep(interval_s)


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # one SIGTERM starts the cleanup; more would cut it
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises `SystemExit(143)`, so `finally` and `with` cleanups run."""
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
