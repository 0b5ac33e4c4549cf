"""Region decode of folder JPEGs: header-sampled params, DCT-scaled decode, its tolerance.

The tolerance (docs/streaming.md, "JPEG folders"): per image, against full decode + crop +
resize under the same params, the mean absolute difference is at most 4 levels (of 255)
and the PSNR at least 33 dB where the box is decoded at full scale, and at most 16 levels
and at least 20 dB where it is decoded at 1/2, 1/4 or 1/8.
"""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from augserve.kernels.augment import crop_resize
from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.bench.stream_jpeg_data import make_jpeg_folder
from augserve.server.data.datasets import DatasetSpec, open_dataset
from augserve.server.data.jpeg import decode_box, read_encoded, reduction
from augserve.server.images import CorruptImage, ImageTooLarge, decode_image_bytes
from augserve.server.stream.samples import make_samples

from ...bombs import jpeg_declaring

# the ImageNet training pipeline at 224, uint8 out (normalize left to the trainer)
TRAIN_U8 = dataclasses.replace(IMAGENET_TRAIN, ops=IMAGENET_TRAIN.ops[:-1], dtype="uint8")
TOLERANCE = {False: (4.0, 33.0), True: (16.0, 20.0)}  # scaled: (mean levels, PSNR dB)


def _close(a: np.ndarray, b: np.ndarray, scaled: bool) -> None:
    d = a.astype(np.float64) - b.astype(np.float64)
    mean, psnr = np.abs(d).mean(), 10 * np.log10(255**2 / max((d**2).mean(), 1e-12))
    worst_mean, least_psnr = TOLERANCE[scaled]
    assert mean <= worst_mean and psnr >= least_psnr, (mean, psnr, scaled)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    make_jpeg_folder(root, 12, seed=5)
    return root


def test_each_box_matches_full_decode_within_the_tolerance(folder):
    rng = np.random.default_rng(0)
    factors = set()
    for path in sorted(folder.rglob("*.jpg")):
        data = path.read_bytes()
        encoded = read_encoded(data, 1 << 26, str(path))
        assert encoded.fast and (encoded.height, encoded.width) == cv2.imread(str(path)).shape[:2]
        assert 300 <= min(encoded.width, encoded.height) <= max(encoded.width,
                                                                  encoded.height) <= 800
        full = decode_image_bytes(data, 1 << 26, str(path))
        for out in ((224, 224), (48, 64)):
            w = int(rng.integers(60, encoded.width + 1))
            h = int(rng.integers(60, encoded.height + 1))
            box = (int(rng.integers(0, encoded.width - w + 1)),
                   int(rng.integers(0, encoded.height - h + 1)), w, h)
            factor = reduction(box, out)
            factors.add(factor)
            assert factor == 1 or (w >= out[1] * factor and h >= out[0] * factor)  # covered
            _close(decode_box(encoded, box, out), crop_resize(full, box, out), factor > 1)
    assert {1, 2, 4} <= factors


def test_stopping_after_the_box_rows_changes_no_pixel(folder):
    path = sorted(folder.rglob("*.jpg"))[0]
    encoded = read_encoded(path.read_bytes(), 1 << 26, str(path))
    assert encoded.height_at > 0  # OpenCV writes baseline JPEGs
    whole = dataclasses.replace(encoded, height_at=-1)
    w, h = encoded.width // 2, encoded.height // 3
    for box, out in (((5, 7, w, h), (224, 224)), ((0, 20, 2 * w, h + 9), (40, 40))):
        assert np.array_equal(decode_box(encoded, box, out), decode_box(whole, box, out))
    progressive = _pil_jpeg(np.zeros((40, 40, 3), np.uint8), progressive=True)
    assert read_encoded(progressive, 1 << 26, "p.jpg").height_at == -1


def test_reduction_picks_the_largest_scale_that_still_covers_the_output():
    assert reduction((0, 0, 224, 500), (224, 224)) == 1
    assert reduction((0, 0, 448, 460), (224, 224)) == 2
    assert reduction((0, 0, 900, 1000), (224, 224)) == 4
    assert reduction((0, 0, 520, 600), (64, 64)) == 8
    assert reduction((0, 0, 100, 100), (224, 224)) == 1  # upsampled crops: full scale


def test_a_stream_batch_gets_the_params_of_full_decode_and_matches_it(folder):
    region = open_dataset(DatasetSpec("folder", str(folder)))
    full = open_dataset(DatasetSpec("folder", str(folder), decode="full"))
    assert region.region_decode and not full.region_decode
    pipeline = Pipeline(TRAIN_U8, "fast")
    indices = np.arange(len(region))
    fast = make_samples(region, indices, pipeline, 3, 1, "skip")
    slow = make_samples(full, indices, pipeline, 3, 1, "skip")
    assert fast.kept.all() and slow.kept.all() and fast.out.shape == (12, 3, 224, 224)
    images = [full.load(i) for i in indices]
    sizes = np.array([im.shape[:2] for im in images])
    boxes = pipeline.spec.ops[0].boxes(
        pipeline.sample(torch.from_numpy(sizes), 3, 1, indices)[0]).tolist()
    for k in indices:
        scaled = reduction(tuple(boxes[k]), (224, 224)) > 1
        _close(fast.out[k].numpy(), slow.out[k].numpy(), scaled)


def test_bytes_do_not_depend_on_the_batch_or_repeats(folder):
    dataset = open_dataset(DatasetSpec("folder", str(folder)))
    pipeline = Pipeline(TRAIN_U8, "fast")
    whole = make_samples(dataset, np.arange(12), pipeline, 9, 2, "skip").out
    part = make_samples(dataset, np.array([7, 2, 11]), pipeline, 9, 2, "skip").out
    again = make_samples(dataset, np.arange(12), pipeline, 9, 2, "skip").out
    assert np.array_equal(whole.numpy(), again.numpy())
    assert np.array_equal(part.numpy(), whole.numpy()[[7, 2, 11]])


def test_boxes_that_leave_the_image_are_filled_as_the_decoded_path_fills_them(folder):
    spec = Pipeline.from_spec({"ops": [{"random_crop": {"size": [300, 300], "padding": 150,
                                                        "fill": [10, 200, 30]}}],
                               "dtype": "uint8", "layout": "NHWC"}).spec
    pipeline = Pipeline(spec, "fast")
    region = open_dataset(DatasetSpec("folder", str(folder)))
    full = open_dataset(DatasetSpec("folder", str(folder), decode="full"))
    indices = np.arange(len(region))
    fast = make_samples(region, indices, pipeline, 4, 0, "skip").out.numpy()
    slow = make_samples(full, indices, pipeline, 4, 0, "skip").out.numpy()
    filled = [k for k in indices if (fast[k] == (10, 200, 30)).all(-1).any()]
    assert filled  # some boxes left their image
    assert np.array_equal(fast[filled], slow[filled])  # both decoded whole, then cut
    for k in indices:
        _close(fast[k], slow[k], False)


def _pil_jpeg(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert(options.pop("mode", "RGB")).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_odd_files_decode_or_are_reported_with_their_path(tmp_path):
    y, x = np.mgrid[0:300, 0:400]
    photo = np.stack([y * 255 // 300, x * 255 // 400, (x + y) % 256], 2).astype(np.uint8)
    _, png = cv2.imencode(".png", photo[:, :, ::-1])
    good = {
        "a_progressive.jpg": _pil_jpeg(photo, quality=90, progressive=True),
        "b_cmyk.jpg": _pil_jpeg(photo, quality=95, mode="CMYK"),
        "c_grey.jpg": _pil_jpeg(photo, quality=90, mode="L"),
        "d_image.png": png.tobytes(),
    }
    bad = {
        "e_truncated.jpg": good["a_progressive.jpg"][:3000],
        "f_garbage.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 4 + b"\xff\xd9",
        "g_empty.jpg": b"",
    }
    (tmp_path / "all").mkdir()
    for name, data in {**good, **bad}.items():
        (tmp_path / "all" / name).write_bytes(data)
    region = open_dataset(DatasetSpec("folder", str(tmp_path)))
    full = open_dataset(DatasetSpec("folder", str(tmp_path), decode="full"))
    spec = dataclasses.replace(TRAIN_U8, ops=(dataclasses.replace(TRAIN_U8.ops[0],
                                                                  size=(64, 64)),))
    pipeline = Pipeline(spec, "fast")
    indices = np.arange(len(region))
    fast = make_samples(region, indices, pipeline, 1, 0, "skip")
    slow = make_samples(full, indices, pipeline, 1, 0, "skip")
    assert fast.kept.tolist() == [True] * 4 + [False] * 3 == slow.kept.tolist()
    assert [s.split(":")[0].rsplit("/", 1)[-1] for s in fast.skipped] == sorted(bad)
    for a, b in zip(fast.out, slow.out, strict=True):
        _close(a.numpy(), b.numpy(), True)
    assert not read_encoded(good["b_cmyk.jpg"], 1 << 26, "cmyk").fast  # decoded whole
    failed = make_samples(region, indices, pipeline, 1, 0, "fail")
    assert failed.out is None and "e_truncated.jpg" in failed.error


def test_a_jpeg_bomb_is_refused_from_its_header():
    with pytest.raises(ImageTooLarge, match="max_image_pixels"):
        read_encoded(jpeg_declaring(50_000, 50_000), 1 << 26, "bomb.jpg")
    with pytest.raises(CorruptImage, match=r"bomb\.jpg"):
        read_encoded(b"\xff\xd8\xff\xe0garbage", 1 << 26, "bomb.jpg")


def test_damaged_jpegs_decode_or_raise_an_image_error():
    y, x = np.mgrid[0:120, 0:160]
    base = _pil_jpeg(np.stack([y * 2, x, (x + y) % 256], 2).astype(np.uint8), quality=90)
    rng = np.random.default_rng(0)
    outcomes = set()
    for i in range(300):
        data = bytearray(base)
        if i % 3 == 0:  # flipped bytes anywhere
            for at in rng.integers(0, len(data), 4):
                data[at] = int(rng.integers(0, 256))
        elif i % 3 == 1:  # cut, with an end marker put back
            data = data[: int(rng.integers(0, len(data)))] + b"\xff\xd9"
        else:  # a header field overwritten
            at = int(rng.integers(2, 200))
            data[at:at + 2] = bytes(rng.integers(0, 256, 2).tolist())
        try:
            encoded = read_encoded(bytes(data), 1 << 20, "x.jpg")
            box = (0, 0, int(rng.integers(1, encoded.width + 1)),
                   int(rng.integers(1, encoded.height + 1)))
            assert decode_box(encoded, box, (32, 32)).shape == (32, 32, 3)
            outcomes.add("decoded")
        except (CorruptImage, ImageTooLarge) as error:
            assert "x.jpg" in str(error)
            outcomes.add("reported")
    assert outcomes == {"decoded", "reported"}
