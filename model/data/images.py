"""Image loading for the visual encoder: the reference's resize / centre-crop / ImageNet normalisation.

A missing or unreadable image (the public bundles have some) becomes a blank image: all zeros
*after* normalisation, i.e. the ImageNet mean colour, which is also what padded object slots get
(``blank``). The loader counts what it blanked (``missing``, ``missing_paths``) so that the caller
can report it once instead of crashing or staying silent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_FROM, CROP_TO = 256, 224  # the reference resizes to 256 and crops 224; we keep that ratio at any size
LISTED_MISSING = 5  # how many missing paths are kept for the message

_READ_ERRORS = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def blank(image_size: int) -> torch.Tensor:
    """The blank image: zeros [3, S, S] (the ImageNet mean colour once normalised)."""
    return torch.zeros(3, image_size, image_size)


def is_readable(path: str | Path) -> bool:
    """True if ``path`` is a file PIL recognises as an image (header only: cheap, no full decode)."""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - reading the header is the check
        return True
    except _READ_ERRORS:
        return False


class ImageLoader:
    """``load(path) -> FloatTensor[3, S, S]``: RGB, shorter side to round(S * 256 / 224) (bilinear), centre
    crop S, ImageNet mean/std: the same numbers as torchvision.transforms.v2 Resize + CenterCrop +
    ToDtype + Normalize. A missing or undecodable file gives ``blank(S)`` and is counted."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.resize_to = round(image_size * RESIZE_FROM / CROP_TO)
        self.missing = 0
        self.missing_paths: list[str] = []
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def load(self, path: str | Path) -> torch.Tensor:
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")  # decodes fully, so a truncated file fails here
        except _READ_ERRORS:
            self.missing += 1
            if len(self.missing_paths) < LISTED_MISSING:
                self.missing_paths.append(str(path))
            return blank(self.image_size)
        # The arithmetic of torchvision's Resize(int) + CenterCrop on PIL images (the reference's
        # transform), written with PIL and torch so the data layer does not import torchvision.
        w, h = rgb.size
        r, S = self.resize_to, self.image_size
        size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        if size != (w, h):
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        left, top = int(round((size[0] - S) / 2.0)), int(round((size[1] - S) / 2.0))
        rgb = rgb.crop((left, top, left + S, top + S))
        x = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255  # [3, S, S]
        return (x - self._mean) / self._std

    __call__ = load
