"""The ResNet-18 case: a fresh ResNet-18 at 224 x 224, pruned 50% and int8, behind the gate.

One definition of the case, run two ways:

- `examples/compress_resnet18.py` submits `case_specs` over the server's Jobs RPCs, lets the
  server load both versions, and times them with tritonclient;
- `augserve compress report --resnet18` runs the same specs in-process (`resnet18_rows`)
  and times the reloaded versions (`reloaded_latency_ms`).

The data: `write_crops` cuts random square crops (a third to all of the short side, at a
random position, saved as 256 px JPEGs) from six photos that scikit-image ships, one class
per photo (a portrait, a cup of coffee, a cat, a rocket, a stained tissue slide, a deep
field of galaxies). Their colours and textures differ, so a ResNet-18 without pretrained
weights learns them in a few dozen small steps. 18 of each class's 30 crops are held out
for the gate (108 images), so one image is 0.93 points, within the 1-point gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: One class per photo, all shipped with scikit-image (nothing is downloaded).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
          "hubble_deep_field")
FP32, SMALL = "resnet18_crops", "resnet18_crops_small"


@dataclass(frozen=True)
class CaseSettings:
    """Sizes of the case (a test shrinks them).

    Attributes:
        per_class: JPEG crops per photo; `validation_fraction` of them are held out.
        validation_fraction: the share of each class the gate measures on.
        epochs, batch_size, lr: the fp32 training (Adam, cosine schedule).
        finetune_epochs: fine-tuning after the 50% channel prune (same batch and lr).
        calibration_images: int8 observers' images (evaluation-preprocessed).
        max_accuracy_drop: the gate (0.01, the jobs' default).
        input_size: the square input (224 for the real case).
        seed: crops, split, initialisation and shuffling.

    Both trainings evaluate the held-out set once, after their last epoch
    (`evaluate_every` = their epochs): at 224 px one evaluation of the 108 images costs
    about half a training epoch of the 72 others, and the gate needs only the last.
    """

    per_class: int = 30
    validation_fraction: float = 0.6
    epochs: int = 7
    batch_size: int = 8
    lr: float = 1e-3
    finetune_epochs: int = 8
    calibration_images: int = 64
    max_accuracy_drop: float = 0.01
    input_size: int = 224
    seed: int = 0


def write_crops(root: Path, per_class: int, seed: int = 0, photos: tuple[str, ...] = PHOTOS,
                size: int = 256) -> None:
    """root/<photo>/<i>.jpg: random square crops of each photo, `size` px JPEGs."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in photos:
        photo = getattr(data, name)()[..., :3]
        side = min(photo.shape[:2])
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            crop_side = int(rng.integers(side // 3, side + 1))
            y, x = (int(rng.integers(0, d - crop_side + 1)) for d in photo.shape[:2])
            crop = Image.fromarray(photo[y : y + crop_side, x : x + crop_side])
            crop.resize((size, size)).save(root / name / f"{i:03d}.jpg", quality=90)


def case_specs(repository: str, dataset: Any, settings: CaseSettings) -> tuple[dict, dict]:
    """The two job specs (JSON form): train the fp32 ResNet-18; prune 50% + int8 it.

    `dataset` is a dataset name the server registers or a folder table. The second spec
    reads the first one's newest version and keeps the jobs' accuracy gate.
    """
    shape = [3, settings.input_size, settings.input_size]
    common = {"dataset": dataset, "validation_fraction": settings.validation_fraction,
              "output_repository": repository, "measure_latency": False, "seed": settings.seed}
    train = {**common, "source": {"zoo": "resnet18", "input_shape": shape},
             "output_name": FP32,
             "steps": [{"finetune": {"epochs": settings.epochs, "lr": settings.lr,
                                     "batch_size": settings.batch_size,
                                     "evaluate_every": max(settings.epochs, 1)}}]}
    small = {**common, "source": {"repository": repository, "name": FP32},
             "output_name": SMALL, "max_accuracy_drop": settings.max_accuracy_drop,
             "steps": [{"prune": {"sparsity": 0.5, "finetune_epochs": settings.finetune_epochs,
                                  "lr": settings.lr, "batch_size": settings.batch_size,
                                  "evaluate_every": max(settings.finetune_epochs, 1)}},
                       {"quantize": {"calibration_batches": 1,
                                     "batch_size": settings.calibration_images}}]}
    return train, small


def summary(fp32_card: dict, small_card: dict, latency_ms: dict, seconds: dict,
            settings: CaseSettings, stages: dict[str, float]) -> dict[str, Any]:
    """The case's figures: accuracies, the gate, size, MACs, latency.

    `stages` maps "<model>: <stage>" to the held-out top-1 a training stage ended with (so
    the pruned float model's top-1 shows beside the int8 one).
    """
    held_out = fp32_card["dataset"]
    return {
        "classes": len(PHOTOS), "images_per_class": settings.per_class,
        "validation_fraction": settings.validation_fraction, "dataset": held_out,
        "training": {"epochs": settings.epochs, "batch_size": settings.batch_size,
                     "lr": settings.lr, "prune_finetune_epochs": settings.finetune_epochs},
        "top1": {"fp32": fp32_card["accuracy"]["after"],
                 "pruned_int8": small_card["accuracy"]["after"]},
        "top1_drop_points": round(100 * (fp32_card["accuracy"]["after"]
                                         - small_card["accuracy"]["after"]), 3),
        "finetune_top1": stages, "gate": small_card["gate"],
        "params": small_card["params"], "macs": small_card["macs"],
        "size_bytes": {"fp32": fp32_card["size_bytes"]["after"],
                       "pruned_int8": small_card["size_bytes"]["after"]},
        "latency_ms": latency_ms, "job_seconds": seconds,
    }


def resnet18_rows(repository: Path, settings: CaseSettings = CaseSettings(),
                  report: Any = None, latency: bool = True, rounds: int = 5) -> dict[str, Any]:
    """Run the case in-process (no server): the report's ResNet-18 rows.

    Writes the crops under `repository/crops`, both versions into `repository`, reloads
    them as the server does and times them at batch 1 and 32 (interleaved rounds).
    """
    import time

    from augserve.server.jobs.execute import execute
    from augserve.server.jobs.progress import Context
    from augserve.server.jobs.specs import JobSpec

    crops = repository / "crops"
    write_crops(crops, settings.per_class, settings.seed)
    stages: dict[str, float] = {}
    current = [""]

    def record(event: Any) -> bool:
        if event.accuracy >= 0 and "finetune" in event.stage:
            stages[f"{current[0]}: {event.stage}"] = round(event.accuracy, 4)
        return bool(report(event)) if report else False

    ctx = Context(0, record)
    cards, seconds = {}, {}
    train, small = case_specs(str(repository), {"kind": "folder", "path": str(crops)}, settings)
    for key, raw in (("fp32", train), ("pruned_int8", small)):
        started, current[0] = time.perf_counter(), raw["output_name"]
        result = execute(JobSpec.from_dict(raw), ctx)
        seconds[key] = round(time.perf_counter() - started, 1)
        cards[key] = {**result.card, "model": raw["output_name"], "version": result.version}
    shape = (3, settings.input_size, settings.input_size)
    times = reloaded_latency_ms(repository, cards, shape, rounds) if latency else {}
    return {**summary(cards["fp32"], cards["pruned_int8"], times, seconds, settings, stages),
            "latency": "in-process forward of the reloaded versions, median ms",
            "models": cards}


def reloaded_latency_ms(repository: Path, cards: dict[str, Any], input_shape: tuple[int, ...],
                        rounds: int) -> dict[str, dict[str, float]]:
    """Reload each version as the server does; median ms of one forward at batch 1 and 32.

    One warm-up pass each, then `rounds` rounds of every model in turn (interleaved, so
    machine load affects all alike).
    """
    import statistics
    import time

    import torch

    from augserve.kernels.serialize import load_compressed

    models = {key: load_compressed(repository / card["model"] / str(card["version"])
                                   / "compressed") for key, card in cards.items()}
    inputs = {batch: torch.rand(batch, *input_shape) for batch in (1, 32)}
    times: dict[str, dict[str, list[float]]] = {k: {"batch_1": [], "batch_32": []}
                                                for k in models}
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for key, model in models.items():
                for batch, x in inputs.items():
                    t0 = time.perf_counter()
                    model(x)
                    if round_:  # round 0 warms up
                        times[key][f"batch_{batch}"].append(1000 * (time.perf_counter() - t0))
    return {k: {b: round(statistics.median(v), 2) for b, v in t.items()}
            for k, t in times.items()}
