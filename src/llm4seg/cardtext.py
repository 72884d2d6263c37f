"""Human-readable text for model cards (CLI ``info``, the napari widget, Markdown model cards)."""
from __future__ import annotations

from typing import Any


def card_summary(card: Any) -> list[tuple[str, str]]:
    """(field, value) rows describing a ModelCard, most important first."""
    model = card.model or {}
    llm = card.llm or {}
    prep = card.preprocessing or {}
    if model.get("llm"):
        kind = {"random": "random layer (ablation)", "none": "adapters only, no layer (ablation)"}.get(
            model.get("llm_init"), "frozen pre-trained layer")
        llm_text = f"{model['llm']} ({llm.get('arch', model.get('llm_arch', '?'))}, {kind}"
        llm_text += f", {'embedded ' + str(llm.get('dtype', '')) if llm.get('embedded', True) else 'by reference'})"
    else:
        llm_text = "none (CMUNeXt baseline)"
    rows = [
        ("name", card.name),
        ("description", card.description or "-"),
        ("classes", ", ".join(card.classes[1:]) if len(card.classes) > 1 else "-"),
        ("input channels", str(model.get("in_channels", "?"))),
        ("prompt channels", ", ".join(model.get("prompts") or []) or "none (automatic only)"),
        ("LLM layer", llm_text),
        ("position / attention", f"{model.get('position', '?')} / {model.get('attention', '?')}"),
        ("input size", f"{prep.get('size')}x{prep.get('size')}" if prep.get("size") else "native (padded to /16)"),
        ("CT window", "level {:g}, width {:g}".format(*prep["window"]) if prep.get("window") else "-"),
    ]
    training = card.training or {}
    if training:
        rows.append(("training", ", ".join(f"{k}={v}" for k, v in training.items() if not isinstance(v, (dict, list)))))
    if card.metrics:
        rows.append(("metrics", ", ".join(f"{k}={_fmt(v)}" for k, v in card.metrics.items() if not isinstance(v, (dict, list)))))
    rows.append(("created", card.created or "-"))
    return rows


def card_brief(card: Any) -> list[tuple[str, str]]:
    """A few (field, value) rows for a narrow panel: name, input, classes and at most three key scores."""
    from .models import modality

    prep = card.preprocessing or {}
    size = f"{prep['size']}×{prep['size']}" if prep.get("size") else "native size"
    rows = [("model", card.name), ("input", f"{modality(card)}, {size}"),
            ("classes", ", ".join(card.classes[1:]) if len(card.classes) > 1 else "-")]
    metrics = card.metrics or {}
    volume = bool(prep.get("window"))  # CT: Dice pooled over the volume's slices says more than a slice mean
    keys = [k for k, v in metrics.items() if _is_key_score(k, v)]
    keys.sort(key=lambda k: not k.startswith(("val", "heldout_own_val")))  # the model's own validation first
    by_set: dict[str, str] = {}  # one score per data set, the first key found for it
    for k in keys:
        pooled = volume and f"{k}_pooled" in metrics
        where, text = _score(k, metrics[f"{k}_pooled"] if pooled else metrics[k], pooled)
        by_set.setdefault(where, text)
    scores = list(by_set.values())
    if scores:
        rows.append(("scores", "; ".join(scores[:3])))
    return rows


def _is_key_score(key: str, value: Any) -> bool:
    return isinstance(value, (int, float)) and key.endswith("dice") and not key.endswith("pooled_dice") \
        and "_pooled" not in key


def _score(key: str, value: float, pooled: bool = False) -> tuple[str, str]:
    """(data set, "Dice 0.76 (data set)") for a ``*_dice`` metric key."""
    where = key.removesuffix("_dice").removeprefix("heldout_").removesuffix("_") or "held out"
    where = {"val": "validation", "own_val": "validation", "heldout": "held out"}.get(where, where.replace("_", " "))
    return where, f"Dice {value:.2f} ({where}{', pooled' if pooled else ''})"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def card_text(card: Any) -> str:
    """Plain-text card: one ``field: value`` line per row."""
    rows = card_summary(card)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def card_markdown(card: Any) -> str:
    """Markdown model card."""
    lines = [f"# {card.name}", "", card.description or "", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card_summary(card) if k not in ("name", "description")]
    return "\n".join(lines) + "\n"
