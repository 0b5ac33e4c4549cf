"""The demo's faces model: its split, its client-side preprocessing, its training and folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.server.images import decode_image_bytes
from augserve.server.inference.demo_faces import (
    FACES_LABELS,
    encode_png,
    faces_held_out,
    held_out_accuracy,
    load_faces_split,
    preprocess_reference,
    write_faces_model,
)
from augserve.server.inference.loading import load_module
from augserve.server.inference.model_config import read_model_config


def test_split_is_fixed_and_balanced_enough():
    train_x, train_y, test_x, test_y = load_faces_split()
    assert set(train_y.tolist()) == {0, 1}
    assert train_x.shape == (160, 25, 25, 3) and train_x.dtype == np.uint8
    assert test_x.shape == (40, 25, 25, 3)
    again = load_faces_split()
    np.testing.assert_array_equal(test_x, again[2])
    assert 10 <= test_y.sum() <= 30  # both classes are held out


def test_png_round_trip_gives_the_same_pixels():
    _, _, images, _ = load_faces_split()
    decoded = decode_image_bytes(encode_png(images[:3])[0], 1 << 20, "image")
    np.testing.assert_array_equal(decoded, images[0])


def test_preprocess_reference_resizes_scales_and_normalizes():
    image = np.full((25, 30, 3), 255, np.uint8)
    out = preprocess_reference([image])
    assert out.shape == (1, 3, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, (1.0 - 0.39) / 0.27, rtol=1e-6)


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    accuracy = write_faces_model(root)
    return root / "faces", accuracy


def test_trained_model_classifies_the_held_out_faces(faces_folder):
    folder, accuracy = faces_folder
    assert accuracy >= 0.9
    settings = read_model_config(folder)
    assert settings.labels == {"logits": FACES_LABELS}
    model = load_module(settings, folder / "1", allow_pickle=False)

    def classify(pngs: list[bytes]) -> np.ndarray:
        pixels = [decode_image_bytes(png, 1 << 20, "image") for png in pngs]
        with torch.inference_mode():
            return model(torch.from_numpy(preprocess_reference(pixels))).argmax(1).numpy()

    assert held_out_accuracy(classify) == accuracy
    assert len(faces_held_out()[0]) == 40
