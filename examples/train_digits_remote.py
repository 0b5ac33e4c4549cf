"""Train a small CNN on digits from a RemoteLoader, and the same CNN from a local DataLoader.

Both see the same pipeline and seed: the remote loader streams batches made on the
server; the local `torch.utils.data.DataLoader` runs the same augserve pipeline in this
process over the same epoch plan (seeded permutation), so the two trainings see
identical batches and reach the same accuracy.

    python examples/train_digits_remote.py                      # starts its own server
    python examples/train_digits_remote.py --pool-size 2        # on Ray actors
    python examples/train_digits_remote.py --target host:8001   # a server that has
        # the arrays datasets "digits_train" / "digits_test" of --data registered

Called from the tests with few epochs: `main(["--epochs", "2", "--pool-size", "0"])`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from augserve.clients import RemoteLoader

PIPELINE = {"ops": [{"rotate": {"degrees": [-12, 12]}}, {"scale": {"scale": [0.9, 1.1]}},
                    {"affine": {"translate": [0.08, 0.08]}, "p": 0.5}], "dtype": "uint8"}
SIZE = 16
_SERVERS: list[Any] = []


def write_split(folder: Path, seed: int = 0) -> dict[str, Path]:
    """scikit-learn's digits as train / test .npz files (80 / 20, stratified by shuffle)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    paths = {}
    for name, rows in (("digits_train", order[:cut]), ("digits_test", order[cut:])):
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], images=images[rows], labels=digits.target[rows])
    return paths


def start_server(paths: dict[str, Path], pool_size: int) -> str:
    """A stream server on a background loop of this process; returns "host:port"."""
    import grpc

    from augserve.server.interceptors import ErrorMappingInterceptor
    from augserve.server.stream.servicer import add_stream_service
    from augserve.server.stream.settings import StreamSettings

    if pool_size:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
    settings = StreamSettings(pool_size=pool_size, backend="fast", datasets={
        name: {"kind": "arrays", "path": str(path), "size": SIZE} for name, path in paths.items()})
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> int:
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        add_stream_service(server, settings, {"digits_aug": json.dumps(PIPELINE)})
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        _SERVERS.append(server)  # keep it alive (a collected aio server stops)
        return port

    return f"127.0.0.1:{asyncio.run_coroutine_threadsafe(start(), loop).result()}"


class LocalDigits(torch.utils.data.Dataset):
    """The same samples and augmentation, made in this process."""

    def __init__(self, path: Path, seed: int, augment: bool) -> None:
        """Open the .npz split the server streams from; `augment` applies PIPELINE."""
        from augserve.server.augment.pipeline import Pipeline
        from augserve.server.data.datasets import DatasetSpec, open_dataset

        self.dataset = open_dataset(DatasetSpec("arrays", path=str(path), size=SIZE))
        self.pipeline = Pipeline.from_spec({**PIPELINE, "layout": "NCHW"} if augment else
                                           {"ops": [], "dtype": "uint8"}, backend="fast")
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        out = self.pipeline([self.dataset.load(index)], seed=self.seed, epoch=self.epoch,
                            sample_indices=[index]).images[0]
        return out, int(self.dataset.labels[index])


class PlanSampler(torch.utils.data.Sampler):
    """Batches of the server's epoch plan: the permutation seeded by (seed, epoch)."""

    def __init__(self, size: int, batch: int, seed: int, shuffle: bool) -> None:
        """One shard, no drop_last, as the remote loader asks for."""
        self.size, self.batch, self.seed, self.shuffle, self.epoch = size, batch, seed, shuffle, 0

    def __iter__(self) -> Any:
        from augserve.server.data.epoch import EpochPlan

        plan = EpochPlan(self.size, self.batch, self.seed, self.epoch, self.shuffle)
        return iter([b.tolist() for b in plan.batches()])

    def __len__(self) -> int:
        return -(-self.size // self.batch)


def make_model(seed: int) -> nn.Module:
    """A small CNN for 16x16 RGB digits."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def train(batches_per_epoch: Any, test_batches: Any, epochs: int, seed: int) -> float:
    """Train on `batches_per_epoch(epoch)`; return the test accuracy."""
    model = make_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        model.train()
        for images, labels in batches_per_epoch(epoch):
            loss = nn.functional.cross_entropy(model(images.float() / 255), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_batches():
            correct += int((model(images.float() / 255).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train remotely and locally; print and return both accuracies and the times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="a running server (default: start one here)")
    parser.add_argument("--data", type=Path, help="where the train / test .npz go")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=0, help="Ray actors (0: a thread)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = args.data or Path(tempfile.mkdtemp(prefix="digits-"))
    data.mkdir(parents=True, exist_ok=True)
    paths = write_split(data)
    target = args.target or start_server(paths, args.pool_size)

    common = {"batch_size": args.batch, "seed": args.seed, "pipeline": PIPELINE,
              "output": "torch"}
    remote = RemoteLoader(target, "digits_train", shuffle=True, **common)
    started = time.perf_counter()
    remote_accuracy = train(
        lambda epoch: remote, lambda: RemoteLoader(
            target, "digits_test", shuffle=False, **{**common, "pipeline": {"ops": []}}),
        args.epochs, args.seed)
    remote_s = time.perf_counter() - started

    train_set = LocalDigits(paths["digits_train"], args.seed, augment=True)
    sampler = PlanSampler(len(train_set), args.batch, args.seed, shuffle=True)
    local = torch.utils.data.DataLoader(train_set, batch_sampler=sampler)
    test_set = LocalDigits(paths["digits_test"], args.seed, augment=False)

    def local_epoch(epoch: int) -> Any:
        train_set.epoch = sampler.epoch = epoch
        return local

    started = time.perf_counter()
    local_accuracy = train(local_epoch, lambda: torch.utils.data.DataLoader(
        test_set, batch_size=args.batch), args.epochs, args.seed)
    local_s = time.perf_counter() - started
    result = {"remote_accuracy": remote_accuracy, "local_accuracy": local_accuracy,
              "remote_s": remote_s, "local_s": local_s}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
