"""The README's quick start: its installs are CI's, and its main command serves the demo.

The README marks its two commands with `<!-- quick-start: set up and run -->` and
`<!-- quick-start: test -->` above their fenced blocks. CI (`.ci/run`) already runs the
installs from a clean venv, so here they are compared with CI's, not run again; the main
command (the set-up block's last line) is run for real: it must start the server on the
embedded Ray with the demo repository, answer an inference, and exit 0 on SIGTERM.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from augserve.clients import InferClient
from augserve.server.bench.lifecycle import wait_for
from augserve.server.inference.demo import load_digits_split

from .markdown import REPO_ROOT, ci_commands, quick_start_block, without_quiet

CACHE = Path(os.environ.get("AUGSERVE_TEST_CACHE", REPO_ROOT / ".cache" / "tests"))
SETUP = quick_start_block("set up and run")


def _is_venv_line(line: str) -> bool:
    return line.startswith("python3 -m venv ")


def _pip_lines(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if line.startswith("pip install")]


def test_the_installs_are_the_ones_ci_runs_in_its_order():
    ci_installs = [without_quiet(argv) for argv in ci_commands("pip") if argv[1] == "install"]
    assert _pip_lines(SETUP) == ci_installs


def test_the_set_up_block_makes_a_venv_installs_and_ends_with_the_main_command():
    assert _is_venv_line(SETUP[0])
    assert ["python3", "-m", "venv"] in (argv[:3] for argv in ci_commands("python3"))
    assert all(line.startswith("pip install") for line in SETUP[1:-1])
    assert shlex.split(SETUP[-1])[:2] == ["augserve", "serve"]


def test_the_test_command_is_the_one_ci_runs():
    (command,) = quick_start_block("test")
    (ci_line,) = ci_commands("in_own_session")  # CI runs it in a session of its own
    assert ci_line[1:ci_line.index("||")] == shlex.split(command)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(path: Path, process: subprocess.Popen, log: Path, deadline_s: float) -> str:
    wait_for(lambda: path.exists() and bool(path.read_text().strip()), deadline_s,
             failed=lambda: process.poll() is not None, what="the main command's ready file",
             log=log)
    return path.read_text().strip()


def test_the_main_command_serves_the_demo_classifier_with_metrics_and_stops_cleanly(tmp_path):
    program, *args = shlex.split(SETUP[-1])
    script = Path(sys.executable).parent / program  # the venv's console script
    ready_file, log, metrics_port = tmp_path / "port", tmp_path / "serve.log", _free_port()
    test_only = [  # free ports, so tests run beside anything on 8001; the tests' demo cache
        "--port", "0", "--metrics-port", str(metrics_port), "--ready-file", str(ready_file),
        "--demo-cache", str(CACHE / "demo"), "--ray-num-cpus", "16",
    ]  # fmt: skip
    process = subprocess.Popen(
        [str(script), *args, *test_only],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        port = _wait_for(ready_file, process, log, deadline_s=300)
        _, _, test_x, test_y = load_digits_split()
        with InferClient(f"127.0.0.1:{port}", timeout=60) as client:
            assert client.is_server_ready() and client.is_model_ready("digits")
            logits = client.infer("digits", {"input": test_x[:64]})["logits"]
        assert float((logits.argmax(1) == test_y[:64]).mean()) >= 0.9
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert 'model="digits"' in r.read().decode()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
