"""``refine``: the mask of one 2D image (or one slice of a volume) after the user's clicks.

A model with prompt channels (``ModelConfig.prompts``) takes the clicks, the previous mask and a box as
input channels. Any other model (the automatic zoo, a user's fine-tune) takes them through a training-free
fallback, ``method="seeds"``: near the clicks, a random walker on the model's own probability map and the
image decides, seeded by the clicks and by the previous mask further away; elsewhere the previous mask
stays as it was.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..fastpath import fast_model
from ..infer import _autocast, image_layout
from ..preprocess import Preprocessing, from_model_output, intensity_range, model_hw, to_model_input
from .prompts import Box, Click, click_radius, prompt_channels, to_model_coords

__all__ = ["refine", "takes_prompts", "zoom_box", "METHODS", "RefineInput", "prepare"]

METHODS = ("auto", "network", "seeds")
SEED_ZONE = 0.15  # the fallback changes the mask within this fraction of the model's side around each click


def takes_prompts(model: Any) -> bool:
    """Whether ``model`` was trained with click channels (``ModelConfig.prompts``)."""
    return bool(getattr(model.config, "prompts", ()))


def model_prep(model: Any) -> Preprocessing:
    """The model card's preprocessing, or the plain one for the model's channels when it has no card."""
    card = getattr(model, "card", None)
    return card.preprocess if card is not None else Preprocessing(channels=model.config.in_channels)


class RefineInput:
    """One 2D image as the model sees it, kept between clicks: raw slice, model input and automatic logits."""

    def __init__(self, image2d: np.ndarray, model: Any, lo: float, hi: float) -> None:
        self.prep = model_prep(model)
        self.image, self.lo, self.hi = image2d, lo, hi
        self.hw = tuple(image2d.shape[:2])
        self.model_hw = model_hw(self.hw, self.prep)
        self.resized = self.prep.size is not None
        self.x = to_model_input(np.asarray(image2d)[None], self.prep, lo, hi, model.device)
        self._auto: torch.Tensor | None = None

    def forward(self, model: Any, prompts: torch.Tensor | None) -> torch.Tensor:
        """Logits (1, 1, h, w) at model size, with ``prompts`` (P, h, w) or none (the automatic mode)."""
        if prompts is None and self._auto is not None:
            return self._auto
        x = self.x if prompts is None else torch.cat([self.x, prompts[None].to(self.x)], 1)
        model.eval()
        with torch.inference_mode(), _autocast(self.x.device):
            logits = fast_model(model)(x).float()
        if prompts is None:
            self._auto = logits
        return logits

    def full_size(self, logits: torch.Tensor) -> np.ndarray:
        return (from_model_output(logits, self.hw, self.prep)[0, 0] > 0).cpu().numpy().astype(np.uint8)


def prepare(image: np.ndarray, model: Any, *, z: int | None = None, window: tuple[float, float] | None = None,
            intensity: tuple[float, float] | None = None) -> RefineInput:
    """The :class:`RefineInput` of a 2D image, or of slice ``z`` of a volume (intensities of the whole volume)."""
    image = np.asarray(image)
    layout = image_layout(image)
    lo, hi = intensity if intensity is not None else intensity_range(image, model_prep(model), window)
    if layout.startswith("3d"):
        if z is None:
            raise ValueError("a volume needs the slice to refine: give z, or clicks with z")
        if not 0 <= z < image.shape[0]:
            raise ValueError(f"slice z={z} is outside the volume's {image.shape[0]} slices")
        image = image[z]
    return RefineInput(image, model, lo, hi)


def _slice_of(clicks: Sequence[Click], z: int | None) -> int | None:
    zs = {c.z for c in clicks if c.z is not None}
    if len(zs) > 1:
        raise ValueError(f"clicks on several slices {sorted(zs)}: refine one slice at a time")
    return z if z is not None else (zs.pop() if zs else None)


def refine(image: np.ndarray, model: Any, clicks: Sequence[Click], previous: np.ndarray | None = None,
           box: Box | None = None, **options: Any) -> np.ndarray:
    """The label map (uint8, 0/1) of the 2D ``image`` — or of the clicked slice of a volume — after ``clicks``.

    ``clicks``: every click so far on this image, oldest first (pixel coordinates of the image; ``z`` for a
    volume). ``previous``: the mask before the newest click (None: no mask yet). ``box``: an optional box
    around the object. With no clicks, no previous mask and no box, the automatic segmentation.

    Options: ``z`` (the slice of a volume, when the clicks do not say), ``window`` (CT level, width),
    ``intensity`` (the (low, high) range, to reuse between clicks), ``method`` (``"auto"``: the network when the
    model takes prompts, else ``"seeds"``; ``"network"``; ``"seeds"``), ``prepared`` (a :class:`RefineInput` of
    this image, which keeps the model input and the automatic logits between clicks), ``zoom`` (default False:
    a prompted model refines a crop around the previous mask and the clicks, RITM's zoom-in; it lowered Dice on
    the tuning sets, docs/interactive.md; :func:`zoom_box`), ``honour`` (default True: a prompted model's mask
    is made to agree with every click afterwards, :func:`honour_clicks`).
    """
    method = options.get("method", "auto")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if getattr(model.config, "num_classes", 1) != 1:
        raise ValueError("clicks need a model with one foreground class; this one has "
                         f"{model.config.num_classes}: pick a one-class model (llm4seg models)")
    clicks = [c if isinstance(c, Click) else Click.from_dict(c) for c in clicks]
    z = _slice_of(clicks, options.get("z"))
    inp = options.get("prepared") or prepare(image, model, z=z, window=options.get("window"),
                                             intensity=options.get("intensity"))
    if previous is not None and tuple(np.shape(previous)) != inp.hw:
        raise ValueError(f"previous mask of shape {np.shape(previous)} does not match the image's {inp.hw}")
    if method == "auto":
        method = "network" if takes_prompts(model) else "seeds"
    if method == "network" and not takes_prompts(model):
        raise ValueError("this model has no prompt channels: use method='seeds' or a click model (llm4seg models)")
    if not clicks and previous is None and box is None:
        return inp.full_size(inp.forward(model, None))
    names = tuple(model.config.prompts)
    use_box = box is not None and ("box" not in names or method == "seeds")
    if use_box and not clicks:  # a box alone: its centre is the first click
        b = box.ordered()
        clicks = [Click((b.y0 + b.y1) / 2, (b.x0 + b.x1) / 2, True)]
    if method == "network":
        crop = zoom_box(inp.hw, clicks, previous) if options.get("zoom", False) and inp.resized else None
        mask = _network(inp, model, names, clicks, previous, None if use_box else box, crop)
        if options.get("honour", True):
            mask = honour_clicks(mask, clicks, click_radius(max(inp.model_hw)) * max(inp.hw) / max(inp.model_hw))
    else:
        mask = _seeded(inp, model, clicks, previous)
    return _inside_box(mask, box) if use_box else mask


def zoom_box(hw: tuple[int, int], clicks: Sequence[Click], previous: np.ndarray | None, *, expand: float = 1.4,
             least: float = 0.2) -> tuple[int, int, int, int] | None:
    """The crop (y0, y1, x0, x1) the network refines in (RITM's zoom-in): the box around the previous mask and
    the clicks, grown ``expand`` times and to at least ``least`` of each side; None (the whole image) for a
    first click on an empty mask or when the crop would cover most of the image."""
    ys = [c.y for c in clicks]
    xs = [c.x for c in clicks]
    if previous is not None and np.any(previous):
        rows, cols = np.flatnonzero(np.any(previous, 1)), np.flatnonzero(np.any(previous, 0))
        ys += [rows[0], rows[-1]]
        xs += [cols[0], cols[-1]]
    elif len(clicks) < 2:
        return None
    box = []
    for lo, hi, side in ((min(ys), max(ys), hw[0]), (min(xs), max(xs), hw[1])):
        size = min(side, max((hi - lo + 1) * expand, least * side, 16))
        start = int(round(min(max(0.0, (lo + hi) / 2 - size / 2), side - size)))
        box += [start, min(side, start + int(round(size)))]
    y0, y1, x0, x1 = box
    return None if (y1 - y0) * (x1 - x0) > 0.8 * hw[0] * hw[1] else (y0, y1, x0, x1)


def _network(inp: RefineInput, model: Any, names: tuple[str, ...], clicks: Sequence[Click],
             previous: np.ndarray | None, box: Box | None, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """The prompted network's mask, on the whole image or on ``crop`` (the previous mask kept outside it)."""
    if crop is None:
        prompts = prompt_channels(names, clicks, previous, box, inp.hw, inp.model_hw, inp.resized)
        return inp.full_size(inp.forward(model, prompts))
    y0, y1, x0, x1 = crop
    sub = RefineInput(inp.image[y0:y1, x0:x1], model, inp.lo, inp.hi)
    moved = [Click(c.y - y0, c.x - x0, c.positive) for c in clicks]
    prev = None if previous is None else np.asarray(previous)[y0:y1, x0:x1]
    if box is not None:
        box = Box(box.y0 - y0, box.x0 - x0, box.y1 - y0, box.x1 - x0)
    prompts = prompt_channels(names, moved, prev, box, sub.hw, sub.model_hw, sub.resized)
    out = np.zeros(inp.hw, np.uint8) if previous is None else (np.asarray(previous) > 0).astype(np.uint8)
    out[y0:y1, x0:x1] = sub.full_size(sub.forward(model, prompts))
    return out


def honour_clicks(mask: np.ndarray, clicks: Sequence[Click], radius: float) -> np.ndarray:
    """``mask`` made to agree with every click: a negative click inside the mask removes its connected part
    when that part is a side island (under half of the mask, no positive click in it), else a disk of
    ``radius`` pixels around it; a positive click outside the mask adds such a disk."""
    from scipy import ndimage

    out = np.asarray(mask).astype(np.uint8).copy()
    yy, xx = np.ogrid[:out.shape[0], :out.shape[1]]
    for c in clicks:
        y, x = int(round(c.y)), int(round(c.x))
        if not (0 <= y < out.shape[0] and 0 <= x < out.shape[1]) or bool(out[y, x]) == c.positive:
            continue
        disk = (yy - c.y) ** 2 + (xx - c.x) ** 2 <= radius * radius
        if c.positive:
            out[disk] = 1
            continue
        parts, _ = ndimage.label(out)
        part = parts == parts[y, x]
        keep = any(p.positive and part[int(round(p.y)), int(round(p.x))] for p in clicks
                   if 0 <= int(round(p.y)) < out.shape[0] and 0 <= int(round(p.x)) < out.shape[1])
        out[disk if keep or part.sum() >= 0.5 * out.sum() else part] = 0
    return out


def _inside_box(mask: np.ndarray, box: Box) -> np.ndarray:
    b = box.ordered()
    out = np.zeros_like(mask)
    y0, x0 = max(0, int(np.floor(b.y0))), max(0, int(np.floor(b.x0)))
    y1, x1 = int(np.ceil(b.y1)) + 1, int(np.ceil(b.x1)) + 1
    out[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    return out


def _seeded(inp: RefineInput, model: Any, clicks: Sequence[Click], previous: np.ndarray | None) -> np.ndarray:
    """The training-free fallback: a random walker near the clicks, the previous mask elsewhere."""
    logits = inp.forward(model, None)
    prob = torch.sigmoid(logits[0, 0]).cpu().numpy()
    h, w = inp.model_hw
    before = inp.full_size(logits) if previous is None else (np.asarray(previous) > 0).astype(np.uint8)
    prior = prob > 0.5 if previous is None else _to_model(before, inp) > 0.5
    pts = [(*to_model_coords(c.y, c.x, inp.hw, inp.model_hw, inp.resized), c.positive) for c in clicks]
    yy, xx = np.mgrid[0:h, 0:w]
    zone = np.zeros((h, w), bool)
    seeds = np.where(prior, 1, 2).astype(np.int32)
    r, reach = click_radius(max(h, w)), SEED_ZONE * max(h, w)
    for y, x, _ in pts:
        zone |= (yy - y) ** 2 + (xx - x) ** 2 <= reach ** 2
    seeds[zone] = 0
    for y, x, positive in pts:
        seeds[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = 1 if positive else 2
    gray = inp.x[0].mean(0).cpu().numpy()
    gray = (gray - gray.min()) / max(1e-6, float(np.ptp(gray)))
    walked = prior.copy()
    rows, cols = np.flatnonzero(zone.any(1)), np.flatnonzero(zone.any(0))
    if len(rows):  # the walk only decides inside the zone: solve it on the zone's box (+1 seeded pixel)
        y0, y1 = max(0, rows[0] - 1), min(h, rows[-1] + 2)
        x0, x1 = max(0, cols[0] - 1), min(w, cols[-1] + 2)
        walked[y0:y1, x0:x1] = _walk(np.stack([gray, prob], -1)[y0:y1, x0:x1], seeds[y0:y1, x0:x1])
    changed_model = zone & (walked != prior)
    keep = _to_full(changed_model.astype(np.float32), inp) < 0.5
    new = _to_full(walked.astype(np.float32), inp) >= 0.5
    return np.where(keep, before, new).astype(np.uint8)


def _walk(data: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Foreground of a random walk on ``data`` (H, W, 2) from ``seeds`` (1 object, 2 background, 0 free)."""
    from skimage.segmentation import random_walker

    labels = np.unique(seeds[seeds > 0])
    if len(labels) < 2:  # one kind of seed only: it takes the whole box
        return np.full(seeds.shape, bool(len(labels)) and labels[0] == 1)
    with warnings.catch_warnings():  # a walk on a box whose seeds are nearly all one label warns
        warnings.simplefilter("ignore", UserWarning)
        return random_walker(data, seeds, beta=130, mode="bf", channel_axis=-1) == 1


def _to_model(mask: np.ndarray, inp: RefineInput) -> np.ndarray:
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    if inp.resized:
        return F.interpolate(m, size=inp.model_hw, mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()
    return F.pad(m, (0, inp.model_hw[1] - inp.hw[1], 0, inp.model_hw[0] - inp.hw[0]))[0, 0].numpy()


def _to_full(m: np.ndarray, inp: RefineInput) -> np.ndarray:
    t = torch.from_numpy(m)[None, None]
    return from_model_output(t, inp.hw, inp.prep)[0, 0].numpy()
