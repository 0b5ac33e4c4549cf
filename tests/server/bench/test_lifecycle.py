"""`bench.lifecycle`: a child's whole group and tree are stopped, whatever the child does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from augserve.server.bench import lifecycle

# A parent that ignores SIGTERM, with a child that ignores it too and a child that moved
# to a session of its own (as Ray's reaper does); it writes their pids to argv[1].
STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    from pathlib import Path
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ignoring = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    away = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            start_new_session=True)
    Path(sys.argv[1]).write_text(f"{ignoring.pid} {away.pid}")
    time.sleep(600)
""")


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def _start_stubborn(tmp_path) -> tuple[lifecycle.ProcessGroup, list[int]]:
    pids = tmp_path / "pids"
    group = lifecycle.ProcessGroup([sys.executable, "-c", STUBBORN, str(pids)])
    lifecycle.wait_for(lambda: pids.exists() and bool(pids.read_text()), 60,
                       lambda: group.process.poll() is not None, "the children")
    return group, [group.pid, *map(int, pids.read_text().split())]


def test_child_runs_in_a_session_of_its_own(tmp_path):
    with lifecycle.ProcessGroup([sys.executable, "-c", "import time; time.sleep(600)"]) as group:
        assert os.getsid(group.pid) == group.pid != os.getsid(0)
        assert os.getpgid(group.pid) == group.pid
    assert group.process.returncode == -signal.SIGTERM


def test_stop_kills_a_tree_that_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle, "LEFTOVER_GRACE_S", 0.5)
    group, pids = _start_stubborn(tmp_path)
    assert _alive(pids) == pids
    assert group.stop(grace_s=0.5) == -signal.SIGKILL
    lifecycle.wait_for(lambda: not _alive(pids), 10, what="the tree to be reaped")


def test_a_clean_exit_on_sigterm_is_its_status(tmp_path):
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0));"
    ready = tmp_path / "ready"
    group = lifecycle.ProcessGroup(
        [sys.executable, "-c", code + f"open({str(ready)!r}, 'w').close(); time.sleep(600)"]
    )
    lifecycle.wait_for(ready.exists, 60, lambda: group.process.poll() is not None, "ready")
    assert group.stop() == 0


def test_run_stops_the_tree_when_it_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle, "GRACE_S", 0.5)
    monkeypatch.setattr(lifecycle, "LEFTOVER_GRACE_S", 0.5)
    pids = tmp_path / "pids"
    with pytest.raises(subprocess.TimeoutExpired):
        lifecycle.run([sys.executable, "-c", STUBBORN, str(pids)], timeout_s=10)
    pids_left = _alive(list(map(int, pids.read_text().split())))
    assert pids_left == []


def test_run_raises_on_a_failed_command():
    with pytest.raises(subprocess.CalledProcessError):
        lifecycle.run([sys.executable, "-c", "raise SystemExit(3)"], timeout_s=60)
    done = lifecycle.run([sys.executable, "-c", "print('hi')"], timeout_s=60)
    assert done.stdout == "hi\n" and done.returncode == 0


def test_sigterm_raises_system_exit_inside_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info, lifecycle.exit_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


# A bench's shape: its children in a ProcessGroup's block, waiting there when Ctrl-C comes.
BENCH = textwrap.dedent("""
    import sys, time
    from augserve.server.bench import lifecycle
    lifecycle.GRACE_S = lifecycle.LEFTOVER_GRACE_S = 0.5
    with lifecycle.exit_on_sigterm(), lifecycle.ProcessGroup(
            [sys.executable, "-c", sys.argv[1], sys.argv[2]]):
        time.sleep(600)
""")


def test_ctrl_c_in_a_bench_stops_the_tree_it_started(tmp_path):
    pids = tmp_path / "pids"
    bench = lifecycle.ProcessGroup([sys.executable, "-c", BENCH, STUBBORN, str(pids)])
    try:
        lifecycle.wait_for(lambda: pids.exists() and bool(pids.read_text()), 60,
                           lambda: bench.process.poll() is not None, "the bench's children")
        tree = [p.pid for p in bench.descendants()] + [*map(int, pids.read_text().split())]
        os.kill(bench.pid, signal.SIGINT)
        assert bench.process.wait(60) != 0  # KeyboardInterrupt
        lifecycle.wait_for(lambda: not _alive(tree), 10, what="the bench's tree to be reaped")
    finally:
        bench.stop()
