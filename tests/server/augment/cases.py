"""One instance of every op, with ranges wide enough to exercise it, for shared tests."""

from __future__ import annotations

from augserve.server.augment.ops import (
    OPS,
    Affine,
    AnchoredCrop,
    CenterCrop,
    ColorJitter,
    GaussianBlur,
    GeometricOp,
    Grayscale,
    HorizontalFlip,
    Normalize,
    RandomCrop,
    RandomErasing,
    RandomGamma,
    RandomResizedCrop,
    Resize,
    Rotate,
    Scale,
    VerticalFlip,
)

OP_CASES = {
    "horizontal_flip": HorizontalFlip(p=0.5),
    "vertical_flip": VerticalFlip(p=0.5),
    "rotate": Rotate(p=0.7, degrees=(-40.0, 40.0), fill=(10.0, 20.0, 30.0)),
    "scale": Scale(p=0.7, scale=(0.6, 1.4)),
    "affine": Affine(p=0.7, translate=(0.2, 0.1), shear=(-15.0, 15.0), shear_y=(-5.0, 5.0)),
    "random_crop": RandomCrop(size=(96, 80), padding=8, fill=(255.0, 0.0, 0.0)),
    "random_resized_crop": RandomResizedCrop(p=0.9, size=(64, 72), scale=(0.08, 1.0)),
    "resize": Resize(size=(50, 70)),
    "center_crop": CenterCrop(size=(100, 60)),
    "anchored_crop": AnchoredCrop(size=(120, 150), anchor="bottom_right"),
    "color_jitter": ColorJitter(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    "grayscale": Grayscale(p=0.5),
    "gaussian_blur": GaussianBlur(p=0.7, kernel_size=7, sigma=(0.5, 2.0)),
    "random_erasing": RandomErasing(p=0.7, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.5),
    "normalize": Normalize(),
    "random_gamma": RandomGamma(p=0.7, gamma=(0.4, 2.5)),
}
assert set(OP_CASES) == set(OPS), "every op needs a case"

GEOMETRIC = [name for name, op in OP_CASES.items() if isinstance(op, GeometricOp)]
