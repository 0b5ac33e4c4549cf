"""The JPEG folder of `augserve bench stream --source jpeg`: ImageNet-like files, generated.

Cut and resized from the photos that ship with scikit-image (astronaut, coffee, chelsea,
rocket) and scikit-learn (china, flower), nothing downloaded: each file is a random window
of one photo (class = photo), resized so its sides lie in 300-800 px (aspect 3:4 to 4:3 and
back), written as baseline 4:2:0 JPEG at quality 85-95 (OpenCV's encoder, as most JPEG
writers, whose output most ImageNet files resemble). A seed fixes the whole folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("astronaut", "coffee", "chelsea", "rocket", "china", "flower")


def photos() -> list[np.ndarray]:
    """The six bundled photos, uint8 RGB, at their own sizes."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(),
            *load_sample_images().images]


def make_jpeg_folder(root: Path, count: int, seed: int = 0, sides: tuple[int, int] = (300, 800),
                     quality: tuple[int, int] = (85, 95)) -> list[Path]:
    """Write `count` JPEGs under `root/<class>/`; return their paths (in writing order)."""
    import cv2

    rng = np.random.default_rng(seed)
    sources = photos()
    paths = []
    for i in range(count):
        label = i % len(CLASSES)
        photo = sources[label]
        height, width = photo.shape[:2]
        # a window of 50-100% of each side, then resized: the long side in `sides`
        wh = rng.uniform(0.5, 1.0, 2) * (width, height)
        x0 = int(rng.integers(0, width - int(wh[0]) + 1))
        y0 = int(rng.integers(0, height - int(wh[1]) + 1))
        window = photo[y0:y0 + int(wh[1]), x0:x0 + int(wh[0])]
        long_side = int(rng.integers(sides[0], sides[1] + 1))
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        out_w = long_side if aspect >= 1 else max(sides[0], round(long_side * aspect))
        out_h = long_side if aspect < 1 else max(sides[0], round(long_side / aspect))
        image = cv2.resize(window, (out_w, out_h), interpolation=cv2.INTER_AREA)
        q = int(rng.integers(quality[0], quality[1] + 1))
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise RuntimeError(f"cv2.imencode failed on sample {i}")
        path = root / CLASSES[label] / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())
        paths.append(path)
    return paths
