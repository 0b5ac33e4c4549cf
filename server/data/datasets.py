"""Datasets the server streams from: image folders, arrays and built-in demo data.

A dataset is named by a `DatasetSpec` (kind plus path or name): small, picklable and
enough to reopen the dataset anywhere, so stream workers (Ray actors) receive the spec,
never the images, and open it lazily. Every dataset yields uint8 RGB [H, W, 3] images
and int64 labels.

- "folder": `root/<class>/<file>.jpg|.jpeg|.png|.webp`, one class per subfolder (sorted
  names; labels are class positions). Decoded by `augserve.server.images`; with
  `decode = "region"` (the default), a stream whose pipeline starts with a box op
  decodes each JPEG at the DCT scale its box needs (`augserve.server.data.jpeg`), past
  the decoded-image cache; `decode = "full"` decodes whole images through the cache.
- "arrays": a `.npz` with `images` and `labels`, or a `.npy` of images with its labels
  in `labels_path` (`.npy`, memory-mapped). Images: uint8 [N, H, W], [N, H, W, 1] or
  [N, H, W, 3].
- "builtin": data that ships inside scikit-learn and scikit-image, nothing downloaded:
  "digits" (1,797 8x8 digits, labels 0-9), "lfw_subset" (200 25x25 faces and non-faces,
  labels 1 / 0), "photos" (scikit-image's astronaut, coffee, chelsea, rocket and
  scikit-learn's china, flower at 256x256, repeated to `count` samples, label = photo).
  `size` resizes every image to size x size.

Example:
    >>> ds = open_dataset(DatasetSpec("builtin", name="digits", size=16))
    >>> len(ds), ds.load(0).shape, int(ds.labels[0])
    (1797, (16, 16, 3), 0)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from augserve.server.data.cache import ByteLRU
from augserve.server.data.jpeg import Encoded, decode_box, read_encoded
from augserve.server.errors import InvalidArgument
from augserve.server.images import MAX_IMAGE_PIXELS, CorruptImage, decode_image_bytes
from augserve.server.paths import inside

log = logging.getLogger(__name__)

KINDS = ("folder", "arrays", "builtin")
DECODES = ("region", "full")
BUILTINS = ("digits", "lfw_subset", "photos")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to open a dataset (picklable; what stream workers receive).

    Attributes:
        kind: "folder", "arrays" or "builtin".
        path: the folder, `.npz` or `.npy` file (folder and arrays).
        name: the built-in dataset's name (builtin).
        size: resize every image to size x size (0 keeps the stored size).
        labels_path: labels `.npy` for a `.npy` of images.
        count: samples of the "photos" built-in (its six photos repeated).
        decode: "region" (folder JPEGs decoded at the DCT scale a leading box op needs)
            or "full" (every image decoded whole, then cut).
    """

    kind: str
    path: str = ""
    name: str = ""
    size: int = 0
    labels_path: str = ""
    count: int = 512
    decode: str = "region"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dataset kind: expected one of {KINDS}, got {self.kind!r}")
        if self.kind == "builtin" and self.name not in BUILTINS:
            raise ValueError(f"builtin dataset: expected one of {BUILTINS}, got {self.name!r}")
        if self.kind != "builtin" and not self.path:
            raise ValueError(f"a {self.kind} dataset needs a path")
        if self.decode not in DECODES:
            raise ValueError(f"dataset decode: expected one of {DECODES}, got {self.decode!r}")
        if self.size < 0 or self.count < 1:
            raise ValueError("dataset size must be >= 0 and count >= 1")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DatasetSpec:
        """From a config table, e.g. `{"kind": "folder", "path": "/data/train"}`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"dataset: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (str(v) if k in ("path", "labels_path") else v)
                      for k, v in values.items()})


def _rgb(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a grey or RGB image, got shape {image.shape}")
    if size and image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(image)


def decode_file(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a JPEG, PNG or WebP file to uint8 RGB [H, W, 3]; CorruptImage names the file.

    The header is checked first (`augserve.server.images`): a file that declares more than
    `max_pixels` pixels raises ImageTooLarge before anything is decoded.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptImage(f"{path}: {error}") from error
    return decode_image_bytes(data, max_pixels, str(path))


class Dataset:
    """Random access to uint8 RGB images and int64 labels."""

    kind = ""

    def __init__(self, labels: np.ndarray, classes: list[str]) -> None:
        """Hold the labels (one per sample) and the class names."""
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> np.ndarray:
        """Sample `index` as uint8 [H, W, 3]; CorruptImage if its file cannot be decoded."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where sample `index` comes from (a path, or the dataset and index)."""
        return f"{self.kind}[{index}]"

    @property
    def region_decode(self) -> bool:
        """Whether `encoded` and `load_box` may replace `load` before a leading box op."""
        return False

    def encoded(self, index: int) -> Encoded:
        """Sample `index`'s bytes with its checked header (region-decoding datasets only)."""
        raise NotImplementedError

    def load_box(self, encoded: Encoded, box: tuple[int, int, int, int],
                 out_hw: tuple[int, int], fill: tuple[float, ...]) -> np.ndarray:
        """`box` of an encoded sample resized to `out_hw` (see `augserve.server.data.jpeg`)."""
        return decode_box(encoded, box, out_hw, fill)


class FolderDataset(Dataset):
    """`root/<class>/<image>`; decodes on load, through a byte-bounded cache."""

    kind = "folder"

    def __init__(self, root: Path, size: int = 0, cache: ByteLRU | None = None,
                 max_pixels: int = MAX_IMAGE_PIXELS, decode: str = "region") -> None:
        """Scan `root` once: classes are its sorted subfolders, files sorted by name.

        A file whose header declares more than `max_pixels` pixels raises ImageTooLarge
        on load, before it is decoded. `decode` is the spec's (`DatasetSpec.decode`).

        Raises:
            ValueError: `root` is not a folder, or a class folder or image file is a
                symlink that leads outside it.
        """
        if not root.is_dir():
            raise ValueError(f"folder dataset {root} is not a folder")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files, labels = [], []
        try:
            for label, name in enumerate(classes):
                for file in sorted(inside(root, name).iterdir()):
                    if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                        files.append(inside(root, name, file.name, field="folder dataset file"))
                        labels.append(label)
        except InvalidArgument as error:
            raise ValueError(f"folder dataset {root}: {error}") from None
        super().__init__(np.asarray(labels, np.int64), classes)
        self.files = files
        self.size = size
        self.cache = cache if cache is not None else ByteLRU(0)
        self.max_pixels = max_pixels
        self.decode = decode

    @property
    def region_decode(self) -> bool:
        """`decode = "region"` and no resize on load.

        Region-decoded samples skip the decoded-image cache (it holds whole images); a
        pipeline that does not start with a box op still loads through it. Which way a
        sample goes depends only on the spec and the pipeline, never on the cache's state.
        """
        return self.decode == "region" and not self.size

    def encoded(self, index: int) -> Encoded:
        """File `index`'s bytes and checked header; CorruptImage / ImageTooLarge name it."""
        path = self.files[index]
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CorruptImage(f"{path}: {error}") from error
        return read_encoded(data, self.max_pixels, str(path))

    def load(self, index: int) -> np.ndarray:
        """Decode (or take from the cache) file `index`."""
        cached = self.cache.get(index)
        if cached is not None:
            return cached
        image = _rgb(decode_file(self.files[index], self.max_pixels), self.size)
        self.cache.put(index, image)
        return image

    def describe(self, index: int) -> str:
        """The file's path."""
        return str(self.files[index])


class ArrayDataset(Dataset):
    """Images and labels held as arrays (`.npy` files are memory-mapped)."""

    kind = "arrays"

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int = 0,
                 rows: np.ndarray | None = None) -> None:
        """Check the shapes: uint8 images [N, H, W(, 1 | 3)], N labels.

        `rows`, if given, maps each sample to its image row (samples may share an image).
        """
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"array images must be uint8 [N, H, W(, C)], got {images.dtype} "
                             f"{images.shape}")
        if images.ndim == 4 and images.shape[3] not in (1, 3):
            raise ValueError(f"array images need 1 or 3 channels, got {images.shape}")
        if len(labels) != (len(images) if rows is None else len(rows)):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(labels, [str(c) for c in np.unique(labels)])
        self.images = images
        self.rows = rows
        self.size = size

    def load(self, index: int) -> np.ndarray:
        """Image `index` as RGB (grey is repeated over three channels)."""
        row = index if self.rows is None else int(self.rows[index])
        return _rgb(np.asarray(self.images[row]), self.size)


def _builtin(name: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)
        return images, digits.target, None
    if name == "lfw_subset":
        from skimage import data

        faces = np.round(data.lfw_subset() * 255).astype(np.uint8)
        return faces, (np.arange(len(faces)) < 100).astype(np.int64), None
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    photos += list(load_sample_images().images)
    photos = [cv2.resize(p, (256, 256), interpolation=cv2.INTER_AREA) for p in photos]
    rows = np.arange(count) % len(photos)
    return np.stack(photos), rows, rows


class BuiltinDataset(ArrayDataset):
    """A demo dataset shipped inside scikit-learn or scikit-image."""

    kind = "builtin"

    def __init__(self, name: str, size: int = 0, count: int = 512) -> None:
        """Load `name` ("digits", "lfw_subset" or "photos") from the installed packages."""
        images, labels, rows = _builtin(name, count)
        super().__init__(images, labels, size, rows)
        self.name = name
        if name == "lfw_subset":
            self.classes = ["non-face", "face"]
        elif name == "photos":
            self.classes = ["astronaut", "coffee", "chelsea", "rocket", "china", "flower"]


def open_dataset(spec: DatasetSpec, cache_bytes: int = 0,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> Dataset:
    """Open the dataset `spec` names; decoded folder images go to a cache of `cache_bytes`.

    A folder image over `max_pixels` pixels (by its header) is refused before decoding.

    Raises:
        ValueError: the path does not exist or holds no usable images or arrays.
    """
    if spec.kind == "builtin":
        return BuiltinDataset(spec.name, spec.size, spec.count)
    path = Path(spec.path)
    if spec.kind == "folder":
        return FolderDataset(path, spec.size, ByteLRU(cache_bytes), max_pixels, spec.decode)
    if path.suffix == ".npz":
        with np.load(path) as archive:
            if "images" not in archive or "labels" not in archive:
                raise ValueError(f"{path}: an .npz dataset needs 'images' and 'labels' arrays")
            return ArrayDataset(archive["images"], archive["labels"], spec.size)
    if path.suffix == ".npy":
        if not spec.labels_path:
            raise ValueError(f"{path}: a .npy of images needs labels_path")
        return ArrayDataset(np.load(path, mmap_mode="r"), np.load(spec.labels_path), spec.size)
    raise ValueError(f"arrays dataset {path}: expected a .npz or .npy file")
