"""Fused CPU augmentation routines, and a plain-torch reference for each.

The fast path reads uint8 HWC images and writes each output once:

- `crop_resize`: an integer crop box (padded with a fill where it leaves the image)
  resized bilinearly (half-pixel centres, no antialias) in one `cv2.resize` pass.
- `warp_affine`: rotation / zoom / shear / translation as one `cv2.warpAffine`.
- `flip`: a `cv2.flip` of the (small) resampled image.
- `apply_colour`: one 3x4 affine colour matrix per image (brightness, contrast,
  saturation, hue, grayscale and normalize folded together), applied with
  `cv2.transform` straight into the output buffer, HWC or CHW, any output dtype.

`augserve.kernels.augment.reference` holds the plain-torch versions the tests
compare against.
"""

from augserve.kernels.augment.colour import apply_colour, mean_rgb
from augserve.kernels.augment.resample import crop_resize, flip, gaussian_blur, warp_affine

__all__ = ["apply_colour", "crop_resize", "flip", "gaussian_blur", "mean_rgb", "warp_affine"]
