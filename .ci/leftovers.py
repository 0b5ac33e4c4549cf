"""Fail when a test run left processes behind: those of its session, or carrying its mark.

`.ci/run` starts `pytest -q` in a session of its own (`setsid`) with
AUGSERVE_CI_MARK=<token> in its environment, which every process it starts inherits,
including those started in sessions of their own (servers, Ray's raylet and workers).
Afterwards this script waits up to `--wait` seconds for any such process to exit, then
prints the ones left and exits 1.

Usage:
    python .ci/leftovers.py --session 12345 --mark 3f2a...
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psutil

MARK = "AUGSERVE_CI_MARK"


def leftovers(session: int, mark: str) -> list[psutil.Process]:
    """Living processes, other than this one, in `session` or whose environment has the mark."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(process.pid) == session or process.environ().get(MARK) == mark:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def main() -> int:
    """Wait for the run's processes to go; print those left and return 1, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", type=int, required=True, help="the test run's session id")
    parser.add_argument("--mark", required=True, help=f"the value of {MARK} in the run")
    parser.add_argument("--wait", type=float, default=15.0, help="seconds to let them exit")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while (left := leftovers(args.session, args.mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        print("no process left behind by the tests")
        return 0
    print(f"{len(left)} process(es) left behind by the tests:")
    for process in left:
        try:
            print(f"  {process.pid} {' '.join(process.cmdline())[:300]}")
        except psutil.Error:
            continue
    return 1


if __name__ == "__main__":
    sys.exit(main())
