"""Very large 2D images (whole-slide-sized scans, 20000² px): downscale with bounded memory, upsample the mask.

The network sees a fixed 128²/256² input, so an image larger than ``MAX_SIDE`` px on a side is first reduced
by an integer factor with a block mean (area average, like ``cv2.INTER_AREA``), strip by strip, so no
float copy of the full image is ever made; the mask is computed on the reduced image and written back
to the full size by nearest-neighbour repetition into a preallocated uint8 array, strip by strip.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_SIDE = 4096  # larger 2D images are downscaled before preprocessing
TARGET_SIDE = 2048  # ... to at most this many pixels on the longer side
STRIP_BYTES = 64 * 2**20  # float32 working memory per strip


def reduce_factor(hw: tuple[int, int], max_side: int = MAX_SIDE, target: int = TARGET_SIDE) -> int:
    """1 when the image is small enough, else the integer factor that brings its longer side to ≤ ``target``."""
    longest = max(hw)
    return 1 if longest <= max_side else math.ceil(longest / target)


def block_mean(image: np.ndarray, f: int) -> np.ndarray:
    """(H, W[, C]) → (⌈H/f⌉, ⌈W/f⌉[, C]) float32 means of f×f blocks (edge blocks: the mean of their pixels)."""
    h, w = image.shape[:2]
    tail = image.shape[2:]
    oh, ow = -(-h // f), -(-w // f)
    out = np.empty((oh, ow) + tail, dtype=np.float32)
    channels = int(np.prod(tail)) if tail else 1
    rows_per_strip = max(1, STRIP_BYTES // max(1, f * w * channels * 4))  # output rows per strip
    for o0 in range(0, oh, rows_per_strip):
        o1 = min(oh, o0 + rows_per_strip)
        strip = torch.from_numpy(np.ascontiguousarray(image[o0 * f: min(h, o1 * f)]))
        x = strip.reshape(strip.shape[0], w, channels).permute(2, 0, 1)[None].float()  # (1, C, rows, W)
        with torch.inference_mode():
            y = F.avg_pool2d(x, f, f, ceil_mode=True, count_include_pad=False)
        out[o0:o1] = y[0].permute(1, 2, 0).reshape((o1 - o0, ow) + tail).numpy()
    return out


def upsample_into(small: np.ndarray, f: int, out: np.ndarray) -> np.ndarray:
    """Nearest-neighbour ×f of ``small`` (h, w[, ...]) into ``out`` (H, W[, ...]), strip by strip; returns ``out``."""
    h, w = out.shape[:2]
    rows = max(1, STRIP_BYTES // max(1, f * w * out.itemsize * max(1, int(np.prod(out.shape[2:])))))
    for o0 in range(0, small.shape[0], rows):
        o1 = min(small.shape[0], o0 + rows)
        wide = np.repeat(small[o0:o1], f, axis=1)[:, :w]  # (rows, W, ...)
        for i in range(f):  # output row o * f + i repeats input row o
            dest = out[o0 * f + i: min(h, o1 * f): f]
            dest[...] = wide[: dest.shape[0]]
    return out
