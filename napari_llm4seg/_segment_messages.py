"""What the Segment widget tells the user when something goes wrong: the problem, then what to do."""
from __future__ import annotations

from typing import Any

import numpy as np

from llm4seg.device import is_oom
from llm4seg.modality import model_hint
from llm4seg.models import COLOUR_MODELS, GRAY_MODELS, recommend
from llm4seg.oom import OutOfMemory
from llm4seg.preprocess import colour_is_gray, looks_like_ct

SPECIALISTS_RGB = {name for name, _ in COLOUR_MODELS if name != "generalist"}

OPEN_IMAGE = "open an image (File > Open, or File > Open Sample > LLM4Seg) and select it in the layer list"


def describe(exc: BaseException) -> str:
    """'RuntimeError: message' (without a trailing full stop), or just the type for an empty message; for
    memory that ran out even one slice at a time on the CPU, what happened (the advice follows separately)."""
    if isinstance(exc, OutOfMemory):
        return str(exc).split(":")[0]
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def what_to_do(exc: BaseException) -> str:
    """The advice that goes with a failed run."""
    if is_oom(exc):
        return ("Not enough memory: segment a smaller scope (current slice or a z-range), choose the CPU device "
                "or close other programs, then segment again.")
    return "Check the input image and the checkpoint (or choose the CPU device), then segment again."


def run_failed(source: str, exc: BaseException) -> str:
    return f"LLM4Seg: segmenting {source!r} failed ({describe(exc)}). Nothing was written. {what_to_do(exc)}"


def write_failed(source: str, exc: BaseException) -> str:
    return (f"LLM4Seg could not add the segmentation of {source!r} to the viewer ({describe(exc)}). "
            f"{what_to_do(exc)}")


def no_input(active: Any) -> str:
    """Nothing to segment; names the selected layer when it is not an image."""
    text = f"Nothing to segment: {OPEN_IMAGE}."
    if active is not None:
        text += f" The selected layer {active.name!r} is a {type(active).__name__} layer; LLM4Seg segments images."
    return text


def load_failed(value: str, exc: BaseException, still: str | None) -> str:
    keep = (f"The model in use is still {still!r}." if still
            else "No model is loaded: choose another checkpoint in the Model box.")
    return f"LLM4Seg could not load checkpoint {value!r}: {describe(exc)}. {keep}"


def lead_note(source: str, where: str) -> str:
    """A 4D+ layer is segmented at the time point / channel the viewer shows."""
    return (f"LLM4Seg: {source!r} has time / channel axes; segmenting the time point / channel shown in the "
            f"viewer ({where}). Move the slider and segment again for another one.")


def shape_changed(source: str) -> str:
    return (f"LLM4Seg: the data of {source!r} changed shape during the run; the result was discarded. "
            "Segment it again.")


def layer_hint(layer: Any, model: Any) -> tuple[str, bool]:
    """The Model section's hint line for an input layer and the model in use: (text, whether the model fits)."""
    data = getattr(layer, "data", None)
    if not isinstance(data, np.ndarray) or model is None:
        return "", True
    hint = model_hint(data, bool(getattr(layer, "rgb", False)), model.card.name)
    return hint.text, hint.fits


def modality_hint(source: str, image: Any, card: Any, window: Any, rgb: bool = False) -> str | None:
    """A warning when a CT volume (Hounsfield units) meets a model that was not trained on CT, or the reverse,
    or a colour image meets a 1-channel model (the shipped model to switch to is named, never switched to)."""
    if not isinstance(image, np.ndarray) or card is None:
        return None
    if rgb and colour_is_gray(image):
        rgb = False  # gray data stored as colour (equal red, green and blue): a gray image for every purpose
    if rgb and card.preprocess.channels == 1:
        best = model_hint(image, True, card.name)
        shipped = {name for name, _ in recommend(image, rgb=True)}
        other = (f"Choose '{best.model}' ({best.modality}) in the Model box to use colour, or fine-tune"
                 if best.model in shipped else "Fine-tune")
        return (f"LLM4Seg: {source!r} is a colour image, but the model {card.name!r} takes one gray channel, so "
                f"colour is converted to gray. {other} on a few labelled images: fine-tuning on colour images "
                "turns the model into an RGB one.")
    if not rgb and image.dtype == np.uint8 and card.name in SPECIALISTS_RGB:
        found = recommend(image)
        named = " or ".join(f"'{name}' ({why.removeprefix('gray, for ')})" for name, why in found)
        return (f"LLM4Seg: {source!r} is a gray image, but {card.name!r} was trained on colour "
                f"{dict(COLOUR_MODELS)[card.name]} images, so expect a poor mask."
                + (f" For ultrasound choose {named} in the Model box." if named else ""))
    trained_on_ct = bool((card.preprocessing or {}).get("window"))
    if looks_like_ct(image) and not trained_on_ct and window is None:
        return (f"LLM4Seg: {source!r} looks like CT (Hounsfield units), but the model {card.name!r} was not trained "
                "on CT (its card has no CT window), so expect a poor mask. Choose a CT model such as 'ct-liver' in "
                "the Model box, or fine-tune this one on a few labelled slices.")
    if (not rgb and image.ndim == 3 and image.dtype != np.uint8 and not trained_on_ct and window is None
            and card.name in dict(GRAY_MODELS)):
        return (f"LLM4Seg: {source!r} is a volume of more than 8 bits (MRI?), but {card.name!r} was trained on "
                "ultrasound images, so expect a poor mask. No shipped model segments MRI: label the structure on "
                "about 5 slices and fine-tune (the Fine-tune tab starts such volumes from 'gray-start').")
    if trained_on_ct and image.dtype == np.uint8:
        return (f"LLM4Seg: the model {card.name!r} was trained on CT in Hounsfield units, but {source!r} is an 8-bit "
                "image, so expect a poor mask. Choose a model trained on this kind of image (e.g. 'busi-lesion' "
                "for ultrasound).")
    return None
