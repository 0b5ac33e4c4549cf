"""One real `augserve serve` on loopback for the whole fuzz suite, and its time budget.

The server serves the e2e test repository and a folder dataset, `fuzzed`, whose two image
files the image tests overwrite with corrupt bytes before each example. Its stream and
augment pools have one actor each, and the stream cache is off, so every example decodes
the files afresh.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import grpc
import numpy as np
import psutil
import pytest

from ..e2e.conftest import ServeProcess, build_test_repository

#: Seconds of fuzzing for the whole suite (server start-up not counted); CI runs about 40.
FUZZ_SECONDS = float(os.environ.get("AUGSERVE_FUZZ_SECONDS", "40"))
#: How far the server tree's RSS may grow over its size after warm-up, in GiB.
RSS_SLACK_GIB = float(os.environ.get("AUGSERVE_FUZZ_RSS_SLACK_GIB", "2"))
IMAGE_FILES = ("a/0.png", "a/1.jpg")


def seed_images() -> dict[str, bytes]:
    """A valid PNG and JPEG of a small gradient: what the image strategies corrupt."""
    image = np.add.outer(np.arange(24), np.arange(32)).astype(np.uint8)
    image = np.stack([image, image[::-1], 255 - image], axis=2)
    return {suffix: cv2.imencode(suffix, image)[1].tobytes() for suffix in (".png", ".jpg")}


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants (Ray's workers included)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # a worker that exited meanwhile
            continue
    return total


class FuzzServer:
    """The served process, a channel to it, and the folder behind its `fuzzed` dataset."""

    def __init__(self, serve: ServeProcess, dataset: Path) -> None:
        """Open an insecure channel to `serve`."""
        self.serve = serve
        self.dataset = dataset
        self.channel = grpc.insecure_channel(serve.url)
        self.pid = serve.group.process.pid
        self.rss_bound = 0

    def write_images(self, contents: dict[str, bytes]) -> None:
        """Replace the dataset's image files (keyed as `IMAGE_FILES`)."""
        for name, data in contents.items():
            (self.dataset / name).write_bytes(data)


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory) -> FuzzServer:
    """`augserve serve` for the suite; fails the suite if it dies."""
    work = tmp_path_factory.mktemp("fuzz")
    repository = build_test_repository(work / "repository")
    dataset = work / "dataset"
    (dataset / "a").mkdir(parents=True)
    images = seed_images()
    for name in IMAGE_FILES:
        (dataset / name).write_bytes(images[Path(name).suffix])
    config = work / "server.toml"
    config.write_text(
        "[stream]\ncache_bytes = 0\npool_size = 1\n"
        f'[stream.datasets.fuzzed]\nkind = "folder"\npath = "{dataset}"\n'
        "[augment]\npool_size = 1\n"
    )
    # the models the requests name (the rest of the repository would only lengthen start-up)
    models = [flag for name in ("digits", "digits_torchscript", "resnet20")
              for flag in ("--load-model", name)]
    serve = ServeProcess(repository, work, "--config", str(config), "--shutdown-grace-s", "2",
                         *models)
    try:
        yield FuzzServer(serve, dataset)
    finally:
        code = serve.terminate()
        assert code == 0, serve.log.read_text()[-3000:]


def run_for(share: float, batch: Callable[[], None]) -> int:
    """Run the hypothesis test `batch` again and again for `share` of `FUZZ_SECONDS`.

    Each call is a fresh hypothesis run of its `max_examples` (new random draws); a
    failing example stops the loop there, shrunk and printed. Returns the calls made.
    """
    end = time.monotonic() + share * FUZZ_SECONDS
    calls = 0
    while True:
        batch()
        calls += 1
        if time.monotonic() >= end:
            return calls
