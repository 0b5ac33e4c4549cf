"""`augserve transfer report`: the transfer learning curve, five methods on two pairs.

For each pair a source `digits_net` is trained once (with the jobs' augmentation), then each
method of `augserve.server.jobs.transfer` builds and trains a model for the target task from
k labelled images per class, for every k and seed; top-1 is measured on the pair's fixed
held-out set, and the wall time of the training (`fit`) is recorded.

Pairs (images: scikit-learn's digits, the jobs' `digits` dataset, train and test splits
together, 1,797 images as float32 3 x 8 x 8 in [0, 1], shuffled with seed 0):

- `new_classes`: source: the digits 0-4 (85% to train, 15% to measure it); target:
  the digits 5-9 (labels 0-4), all of them unseen by the source.
- `new_domain`: the same ten classes under a blur. Source: the first half of the shuffled
  digits, sharp (85% / 15%); target: the other half, each image blurred by a Gaussian of
  sigma = 1 px (a 7 x 7 kernel, normalised to sum 1, zero padding), like a defocused camera.

In each target, `pool_per_class` images per class (30, drawn once with seed 0) are the only
candidates for labelled images; the rest is the fixed held-out set. For seed s the k
labelled images of a class are the first k of the pool in an order drawn with seed s (so a
seed's sets grow with k). They are expanded once into the originals plus `copies`
augmented copies (the jobs' `DIGITS_PIPELINE`: random shifts of up to 1 px and rotations of
up to 10 degrees, keyed by seed and copy), and every method of that seed and k trains on
the same expanded set: scratch gets the same augmentation as the transfers. Every run
takes about `steps` Adam steps of batch 64 (cosine learning rate; whole epochs of the
expanded set), at the learning rates of `LR`.
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augserve.server.jobs.data import Dataset, augmented_batches, load_dataset
from augserve.server.jobs.models import digits_net
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Transfer
from augserve.server.jobs.train import evaluate, fit
from augserve.server.jobs.transfer import run_transfer

PAIRS = ("new_classes", "new_domain")
METHODS = ("scratch", "feature_extraction", "gap_transfer", "fc_transfer", "full_finetune")
KS = (1, 2, 5, 10, 20)
#: Learning rates (the head's; full_finetune's backbone trains at a tenth): a head on a
#: frozen backbone (a linear probe) takes larger steps than a whole network.
LR = {"scratch": 1e-2, "feature_extraction": 3e-2, "gap_transfer": 3e-2, "fc_transfer": 3e-2,
      "full_finetune": 1e-2}
BLUR_SIGMA = 1.0
BATCH = 64


@dataclass(frozen=True)
class StudySettings:
    """Sizes of the study (the tests shrink them).

    Attributes:
        ks: labelled images per class.
        seeds: runs per (method, k), seeds 0 .. seeds - 1.
        steps: Adam steps per run (rounded up to whole epochs of the expanded set).
        source_epochs: epochs of each pair's source.
        width, hidden: the `digits_net` of sources and scratch models.
        copies: augmented copies of each labelled image.
        pool_per_class: a target's candidates for labelled images, per class.
        methods: the methods to run.
    """

    ks: tuple[int, ...] = KS
    seeds: int = 5
    steps: int = 100
    source_epochs: int = 15
    width: int = 16
    hidden: int = 64
    copies: int = 8
    pool_per_class: int = 30
    methods: tuple[str, ...] = METHODS


@dataclass(frozen=True)
class Pair:
    """A source task and a target task: the source's data and the target's pool and test."""

    name: str
    description: str
    source: Dataset
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    same_classes: bool


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """`images` (N, C, H, W) blurred by a Gaussian of `sigma` px (radius ceil(3 sigma), zeros)."""
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    kernel = torch.outer(taps, taps)
    kernel = (kernel / kernel.sum()).float()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    channels = x.shape[1]
    weight = kernel.expand(channels, 1, *kernel.shape).contiguous()
    return F.conv2d(x, weight, padding=radius, groups=channels).numpy()


def _split_source(name: str, x: np.ndarray, y: np.ndarray, classes: int, what: str) -> Dataset:
    cut = int(0.85 * len(y))
    return Dataset(name, x[:cut], y[:cut], x[cut:], y[cut:], classes,
                   f"{what}: {cut} to train, {len(y) - cut} held out")


def make_pair(name: str, pool_per_class: int = 30) -> Pair:
    """The pair `name` (`new_classes` or `new_domain`), as the module docstring describes."""
    digits = load_dataset("digits")
    x = np.concatenate([digits.train_x, digits.test_x])
    y = np.concatenate([digits.train_y, digits.test_y])
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    if name == "new_classes":
        src = y < 5
        source = _split_source("digits 0-4", x[src], y[src], 5, "digits 0-4")
        tx, ty, classes, same = x[~src], y[~src] - 5, 5, False
        description = "digits 0-4 -> digits 5-9 (new classes, same look)"
    elif name == "new_domain":
        half = len(y) // 2
        source = _split_source("digits sharp", x[:half], y[:half], 10, "digits 0-9, sharp")
        tx, ty, classes, same = blur(x[half:]), y[half:], 10, True
        description = (f"sharp digits 0-9 -> the other digits 0-9 blurred (Gaussian, "
                       f"sigma {BLUR_SIGMA} px): same classes, new domain")
    else:
        raise ValueError(f"unknown pair {name!r}; known: {PAIRS}")
    rng = np.random.default_rng(0)
    pool = np.concatenate(
        [rng.permutation(np.flatnonzero(ty == c))[:pool_per_class] for c in range(classes)])
    test = np.setdiff1d(np.arange(len(ty)), pool)
    return Pair(name, description, source, tx[pool], ty[pool], tx[test], ty[test], classes,
                same)


def labelled(pair: Pair, k: int, seed: int, copies: int) -> Dataset:
    """Seed `seed`'s k images per class from the pool, with `copies` augmented copies each.

    The held-out split of the returned Dataset is the k-shot originals themselves, so the
    per-epoch accuracy that `fit` reports costs nothing; top-1 is measured on the pair's
    test set afterwards.
    """
    rng = np.random.default_rng(seed)
    picked = np.concatenate([
        rng.permutation(np.flatnonzero(pair.pool_y == c))[:k] for c in range(pair.num_classes)])
    x, y = pair.pool_x[picked], pair.pool_y[picked]
    xs, ys = [x], [y]
    for copy in range(copies):
        (images, labels), = augmented_batches(x, y, len(y), seed, copy)
        xs.append(images.numpy())
        ys.append(labels.numpy())
    return Dataset(f"{pair.name} k={k}", np.concatenate(xs), np.concatenate(ys), x, y,
                   pair.num_classes, f"{k} per class, {copies} augmented copies (seed {seed})")


def train_source(pair: Pair, settings: StudySettings) -> tuple[nn.Module, dict[str, Any]]:
    """The pair's source model (trained once, seed 0) and its figures."""
    torch.manual_seed(0)
    model = digits_net(pair.source.num_classes, settings.width, settings.hidden)
    started, cpu = time.perf_counter(), time.process_time()
    top1 = fit(model, pair.source, Context(0), "source", settings.source_epochs, 3e-3,
               augment=True)
    figures = {"description": pair.source.description, "top1": top1,
               "train_s": round(time.perf_counter() - started, 3),
               "cpu_s": round(time.process_time() - cpu, 3),
               "images": len(pair.source.train_y)}
    if pair.same_classes:  # the source as it is, on the target's held-out set
        figures["top1_on_target_test"] = evaluate(model, pair.test_x, pair.test_y)
    return model, figures


def run_one(
    source: nn.Module, method: str, data: Dataset, pair: Pair, settings: StudySettings,
    seed: int,
) -> tuple[float, float, float]:
    """Train one model with `method` on `data`: (held-out top-1, wall s, CPU s of training)."""
    per_epoch = -(-len(data.train_y) // BATCH)
    step = Transfer(method, epochs=max(1, -(-settings.steps // per_epoch)), lr=LR[method])
    torch.manual_seed(seed)
    fresh = digits_net(pair.num_classes, settings.width, settings.hidden)
    started, cpu = time.perf_counter(), time.process_time()
    model = run_transfer(source, step, data, Context(seed), fresh)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return evaluate(model, pair.test_x, pair.test_y), seconds, cpu


def _summary(top1: list[float], seconds: list[float], cpu: list[float]) -> dict[str, Any]:
    return {
        "mean": round(statistics.fmean(top1), 4),
        "std": round(statistics.stdev(top1), 4) if len(top1) > 1 else 0.0,
        "seeds": len(top1),
        "train_s": round(statistics.fmean(seconds), 3),
        "cpu_s": round(statistics.fmean(cpu), 3),
    }


def transfer_study(
    settings: StudySettings = StudySettings(), log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the study; returns the result the module docstring describes.

    Returns:
        {"curves": {pair: {method: {str(k): {"mean", "std", "seeds", "train_s", "cpu_s"}}}},
        "pairs": {pair: {"description", "source": {...}, "test_images", ...}},
        "settings": {...}, "learning_rates": LR, "torch_threads": n}. top-1 is a fraction,
        std the sample standard deviation over seeds, train_s the mean wall seconds of a
        run's training and cpu_s its CPU seconds (steadier on a busy machine).
    """
    say = log or (lambda line: None)
    curves: dict[str, Any] = {}
    pairs: dict[str, Any] = {}
    for name in PAIRS:
        pair = make_pair(name, settings.pool_per_class)
        source, figures = train_source(pair, settings)
        pairs[name] = {"description": pair.description, "source": figures,
                       "classes": pair.num_classes, "pool_per_class": settings.pool_per_class,
                       "test_images": len(pair.test_y)}
        say(f"{name}: source top-1 {100 * figures['top1']:.2f}% in {figures['train_s']:.1f} s")
        runs = {m: {k: ([], [], []) for k in settings.ks} for m in settings.methods}
        for k in settings.ks:
            for seed in range(settings.seeds):
                data = labelled(pair, k, seed, settings.copies)
                for method in settings.methods:
                    for column, value in zip(
                        runs[method][k], run_one(source, method, data, pair, settings, seed),
                        strict=True,
                    ):
                        column.append(value)
            for method in settings.methods:
                cell = _summary(*runs[method][k])
                say(f"{name} k={k:<2} {method:<18} {100 * cell['mean']:6.2f}% "
                    f"± {100 * cell['std']:5.2f}  {cell['train_s']:.2f} s")
        curves[name] = {
            m: {str(k): _summary(*runs[m][k]) for k in settings.ks} for m in settings.methods}
    return {"curves": curves, "pairs": pairs, "settings": asdict(settings),
            "learning_rates": LR, "torch_threads": torch.get_num_threads()}


def study_table(result: dict[str, Any]) -> str:
    """Markdown tables, one per pair: top-1 mean ± std (%) per method and k, then CPU s."""
    lines = []
    for name, methods in result["curves"].items():
        info = result["pairs"][name]
        ks = list(next(iter(methods.values())))
        lines += [f"{name}: {info['description']}; source top-1 "
                  f"{100 * info['source']['top1']:.2f}%, held-out {info['test_images']} images",
                  "", "| method | " + " | ".join(f"k={k}" for k in ks) + " | train CPU s (k="
                  + ks[0] + " .. " + ks[-1] + ") |",
                  "| --- |" + " --- |" * (len(ks) + 1)]
        for method, cells in methods.items():
            accuracy = " | ".join(
                f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}" for c in cells.values())
            seconds = " / ".join(f"{c['cpu_s']:.2f}" for c in cells.values())
            lines.append(f"| {method} | {accuracy} | {seconds} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def write_study(result: dict[str, Any], json_path: Path, png_path: Path | None) -> None:
    """Write the result as JSON and the curves as a PNG (one panel per pair, mean ± std)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"]
    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for axis, (name, methods) in zip(axes[0], curves.items(), strict=True):
        for method, cells in methods.items():
            ks = [int(k) for k in cells]
            mean = np.array([c["mean"] for c in cells.values()]) * 100
            std = np.array([c["std"] for c in cells.values()]) * 100
            (line,) = axis.plot(ks, mean, marker="o", label=method)
            axis.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_xlabel("labelled images per class (k)")
        axis.set_ylabel("held-out top-1 (%)")
        title = f"{name}: {result['pairs'][name]['description']}"
        axis.set_title(textwrap.fill(title, 60), fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
