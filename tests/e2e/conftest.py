"""End-to-end fixtures: a test repository, an in-process server, an `augserve serve` process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from augserve.server.bench.lifecycle import ProcessGroup, wait_for
from augserve.server.config import ServerConfig
from augserve.server.inference.demo import build_demo_repository
from tests.e2e.image_models import add_image_models

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("AUGSERVE_TEST_CACHE", REPO_ROOT / ".cache" / "tests"))
POISON = -1234.0


class Raiser(nn.Module):
    """Doubles its input, and raises on the poison value (a model that fails on some inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == -1234.0).any()):
            raise RuntimeError("poisoned input")
        return x * 2


def _copy_model(source: Path, target: Path, **overrides) -> None:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))


def build_test_repository(root: Path) -> Path:
    """The demo models plus models made to fail in specific ways."""
    demo = build_demo_repository(CACHE / "demo")
    for name in ("digits", "digits_torchscript", "resnet20", "faces"):
        shutil.copytree(demo / name, root / name)
    _copy_model(
        demo / "resnet20",
        root / "resnet20_tiny_queue",
        max_batch_size=1,
        dynamic_batching={"max_queue_size": 2},
        warmup={"batch_sizes": [1]},
    )
    _copy_model(
        demo / "digits",
        root / "digits_timeout",
        dynamic_batching={"default_timeout_microseconds": 1},
    )
    raiser = root / "raiser"
    (raiser / "1").mkdir(parents=True)
    torch.jit.script(Raiser()).save(str(raiser / "1" / "model.pt"))
    (raiser / "config.json").write_text(
        json.dumps(
            {
                "platform": "torchscript",
                "max_batch_size": 16,
                "input": [{"name": "x", "datatype": "FP32", "dims": [4]}],
                "output": [{"name": "y", "datatype": "FP32", "dims": [4]}],
                "warmup": {"batch_sizes": [1]},
            }
        )
    )
    _copy_model(  # an output of two dims besides the batch: not a classification output
        raiser,
        root / "raiser_2d",
        input=[{"name": "x", "datatype": "FP32", "dims": [2, 2]}],
        output=[{"name": "y", "datatype": "FP32", "dims": [2, 2]}],
    )
    add_image_models(root)
    pickled = root / "pickled"
    (pickled / "1").mkdir(parents=True)
    torch.save(Raiser(), pickled / "1" / "model.pkl")
    (pickled / "config.json").write_text(
        json.dumps(
            {
                "platform": "pickle",
                "input": [{"name": "x", "datatype": "FP32", "dims": [4]}],
                "output": [{"name": "y", "datatype": "FP32", "dims": [4]}],
            }
        )
    )
    return root


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory) -> Path:
    return build_test_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
async def server(ray_session, model_repository):
    """An in-process server on a free port, sharing the test session's Ray."""
    from augserve.server.app import start_server

    config = ServerConfig(
        port=0,
        metrics_port=0,
        model_repository=model_repository,
        max_message_bytes=1024 * 1024,
        shutdown_grace_s=2.0,
    )
    running = await start_server(config)
    yield running
    await running.stop()


class ServeProcess:
    """`augserve serve` in a process group of its own, on a free port."""

    def __init__(self, repository: Path | None, workdir: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        """Start it on `repository` (None: the demo repository) with `env` (default: ours)."""
        self.ready_file = workdir / "port"
        self.log = workdir / "serve.log"
        where = (
            ["--model-repository", str(repository)] if repository is not None
            else ["--demo-cache", str(CACHE / "demo")]
        )  # fmt: skip
        command = [
            sys.executable, "-m", "augserve.server.cli", "serve",
            "--port", "0", "--metrics-port", "0", "--ray-num-cpus", "16",
            *where, "--ready-file", str(self.ready_file), *extra,
        ]  # fmt: skip
        with self.log.open("w") as out:
            self.group = ProcessGroup(
                command, dict(os.environ) if env is None else env, stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                lambda: bool(self.ready_file.exists() and self.ready_file.read_text().strip()),
                180, lambda: self.group.process.poll() is not None, "augserve serve", self.log,
            )  # fmt: skip
        except BaseException:
            self.group.stop()
            raise
        self.url = f"127.0.0.1:{int(self.ready_file.read_text())}"

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, wait up to `timeout`, then stop the rest of its group; its exit status."""
        return self.group.stop(timeout)


@pytest.fixture
def serve_process():
    """The `ServeProcess` class, for tests that start a server of their own; all stopped after."""
    started: list[ServeProcess] = []

    def start(*args) -> ServeProcess:
        started.append(ServeProcess(*args))
        return started[-1]

    yield start
    for serve in started:
        serve.terminate()


@pytest.fixture(scope="session")
def served(model_repository, tmp_path_factory):
    """One `augserve serve` process for the tests that drive it from outside."""
    serve = ServeProcess(model_repository, tmp_path_factory.mktemp("serve"))
    try:
        yield serve
    finally:
        assert serve.terminate() == 0, serve.log.read_text()[-3000:]
