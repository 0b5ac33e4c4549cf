"""The training example: a RemoteLoader reaches the local DataLoader's accuracy (same batches)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "train_digits_remote.py"


def test_remote_training_matches_local_training(tmp_path):
    spec = importlib.util.spec_from_file_location("train_digits_remote", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--epochs", "2", "--data", str(tmp_path), "--pool-size", "0"])
    assert result["remote_accuracy"] == result["local_accuracy"]
    assert result["remote_accuracy"] > 0.75
