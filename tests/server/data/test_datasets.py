"""Datasets: folders (JPEG and PNG), arrays (.npz, .npy), built-ins; the byte-bounded cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from augserve.server.data.cache import ByteLRU
from augserve.server.data.datasets import (
    CorruptImage,
    DatasetSpec,
    FolderDataset,
    decode_file,
    open_dataset,
)
from augserve.server.images import ImageTooLarge

from ...bombs import jpeg_declaring, png_declaring


def test_folder_decodes_jpeg_and_png_with_class_labels(tmp_path):
    y, x = np.mgrid[0:12, 0:10]
    image = np.stack([y * 20, x * 25, 255 - y * 20], axis=2).astype(np.uint8)  # smooth
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    cv2.imwrite(str(tmp_path / "cat" / "x.png"), image[:, :, ::-1])  # stored BGR
    cv2.imwrite(str(tmp_path / "dog" / "y.JPG"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "dog" / "grey.png"), image[:, :, 0])
    ds = open_dataset(DatasetSpec("folder", path=str(tmp_path)), cache_bytes=1 << 20)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(ds.load(0), image)  # PNG is lossless, RGB order
    assert np.abs(ds.load(2).astype(int) - image.astype(int)).mean() < 8  # JPEG
    assert ds.load(1).shape == (12, 10, 3)  # grey becomes three channels
    assert ds.load(0) is ds.load(0)  # from the cache
    assert ds.describe(2).endswith("y.JPG")


def test_corrupt_file_names_its_path(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(CorruptImage, match=r"bad\.png"):
        decode_file(bad)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CorruptImage, match=r"empty\.jpg"):
        decode_file(tmp_path / "empty.jpg")


def test_arrays_npz_and_npy(tmp_path):
    images = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    labels = np.array([3, 1, 3, 0])
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    ds = open_dataset(DatasetSpec("arrays", path=str(tmp_path / "d.npz"), size=8))
    assert len(ds) == 4 and ds.load(1).shape == (8, 8, 3) and ds.labels.tolist() == [3, 1, 3, 0]
    np.save(tmp_path / "x.npy", np.repeat(images[..., None], 3, axis=3))
    np.save(tmp_path / "y.npy", labels)
    ds = open_dataset(DatasetSpec("arrays", path=str(tmp_path / "x.npy"),
                                  labels_path=str(tmp_path / "y.npy")))
    np.testing.assert_array_equal(ds.load(2)[:, :, 1], images[2])
    np.savez(tmp_path / "bad.npz", x=images)
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        open_dataset(DatasetSpec("arrays", path=str(tmp_path / "bad.npz")))


def test_builtins_ship_with_the_packages():
    digits = open_dataset(DatasetSpec("builtin", name="digits"))
    assert len(digits) == 1797 and digits.load(0).shape == (8, 8, 3)
    assert digits.load(0).max() > 200 and sorted(set(digits.labels.tolist())) == list(range(10))
    lfw = open_dataset(DatasetSpec("builtin", name="lfw_subset", size=32))
    assert len(lfw) == 200 and lfw.load(0).shape == (32, 32, 3) and lfw.labels.sum() == 100
    photos = open_dataset(DatasetSpec("builtin", name="photos", count=20))
    assert len(photos) == 20 and photos.load(13).shape == (256, 256, 3)
    assert photos.classes[photos.labels[13]] == "coffee"


def test_specs_are_checked():
    with pytest.raises(ValueError, match="kind"):
        DatasetSpec("zip", path="x")
    with pytest.raises(ValueError, match="builtin"):
        DatasetSpec("builtin", name="imagenet")
    with pytest.raises(ValueError, match="unknown keys"):
        DatasetSpec.from_mapping({"kind": "folder", "path": "/x", "colour": 1})


def test_cache_is_bounded_in_bytes():
    cache = ByteLRU(max_bytes=1000)
    for i in range(10):
        cache.put(i, np.zeros(300, np.uint8))
        assert cache.nbytes <= 1000
    assert len(cache) == 3 and cache.get(0) is None and cache.get(9) is not None
    cache.get(7)
    cache.put(10, np.zeros(300, np.uint8))  # evicts 8, the least recently used
    assert cache.get(8) is None and cache.get(7) is not None
    cache.put("big", np.zeros(2000, np.uint8))  # larger than the budget: not kept
    assert cache.get("big") is None and cache.nbytes == 900


@pytest.mark.parametrize("make", [png_declaring, jpeg_declaring])
def test_a_file_declaring_50000_squared_pixels_is_refused_before_decoding(
        tmp_path, monkeypatch, make):
    path = tmp_path / ("bomb.png" if make is png_declaring else "bomb.jpg")
    path.write_bytes(make(50_000, 50_000))

    def no_decoding(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(ImageTooLarge, match="max_image_pixels"):
        decode_file(path)


def test_a_file_declaring_a_size_within_the_limit_is_decoded(tmp_path):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((30, 20, 3), np.uint8))
    assert decode_file(path).shape == (30, 20, 3)
    with pytest.raises(ImageTooLarge, match="20x30 = 600 pixels, over max_image_pixels = 599"):
        decode_file(path, max_pixels=599)


def test_folder_dataset_refuses_a_symlink_out_of_its_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "cat").mkdir(parents=True)
    outside.mkdir()
    cv2.imwrite(str(root / "cat" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(outside / "secret.png"), np.zeros((4, 4, 3), np.uint8))
    assert len(FolderDataset(root)) == 1
    (root / "cat" / "b.png").symlink_to(outside / "secret.png")
    with pytest.raises(ValueError, match="leads outside"):
        FolderDataset(root)
    (root / "cat" / "b.png").unlink()
    (root / "dog").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="leads outside"):
        FolderDataset(root)
