"""A bench that fails halfway leaves no process behind: its server, Ray and workers all go.

`augserve bench infer` runs in a session of its own with a marker in its environment,
which every process it starts inherits (Ray's workers too, through the raylet). Once
its server is up and the load generator runs, the bench is made to fail: the load
generator is killed. Then no process that carries the marker, or that was in the
bench's tree, may be left.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import psutil
import pytest

from augserve.server.bench import lifecycle

MARK = "AUGSERVE_TEST_BENCH_MARK"


def _marked(value: str) -> list[psutil.Process]:
    """Living processes whose environment holds MARK=value."""
    found = []
    for process in psutil.process_iter():
        try:
            if (process.status() != psutil.STATUS_ZOMBIE
                    and process.environ().get(MARK) == value):  # fmt: skip
                found.append(process)
        except psutil.Error:
            continue
    return found


def _loadgen(bench: lifecycle.ProcessGroup) -> psutil.Process | None:
    for process in bench.descendants():
        try:
            if "augserve.server.bench.loadgen" in process.cmdline():
                return process
        except psutil.Error:
            continue
    return None


def _describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {' '.join(process.cmdline())[:200]}")
        except psutil.Error:
            continue
    return "\n".join(lines)


# Ctrl-C (KeyboardInterrupt) and SIGTERM (a SystemExit once `lifecycle.exit_on_sigterm` has
# made it one) leave the same `with` blocks as this failure does: tests/server/bench/
# test_lifecycle.py checks that they stop a bench's tree.
def test_failed_bench_infer_leaves_no_process(tmp_path):
    mark = uuid.uuid4().hex
    log = tmp_path / "bench.log"
    command = [
        sys.executable, "-m", "augserve.server.cli", "bench", "infer", "--quick",
        "--baseline", "none", "--loadgen", "python",
    ]  # fmt: skip
    found: dict[str, psutil.Process] = {}

    def loadgen_running() -> bool:
        process = _loadgen(bench)
        if process is not None:
            found["loadgen"] = process
        return process is not None

    with log.open("w") as out:
        bench = lifecycle.ProcessGroup(
            command, lifecycle.child_env(**{MARK: mark}), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        # The load generator runs only once the server is ready, its Ray and replicas up.
        lifecycle.wait_for(loadgen_running, 300, lambda: bench.process.poll() is not None,
                           "the bench's load generator", log)  # fmt: skip
        started = bench.descendants()
        commands = " ".join(" ".join(p.cmdline()) for p in started if p.is_running())
        assert "augserve.server.cli serve" in commands and "raylet" in commands, commands
        found["loadgen"].kill()
        code = bench.process.wait(180)
        assert code != 0, log.read_text()[-3000:]
        # The bench has exited: what it started must be gone already, bar reaping.
        left = []

        def nothing_left() -> bool:
            left[:] = [p for p in {*_marked(mark), *started} if lifecycle.is_alive(p)]
            return not left

        try:
            lifecycle.wait_for(nothing_left, 10, what="the bench's processes to be reaped")
        except RuntimeError:
            pytest.fail(f"left running after the bench failed:\n{_describe(left)}")
    finally:
        bench.kill(bench.descendants() + _marked(mark))
