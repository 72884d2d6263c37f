"""Human-readable text for model cards (CLI ``info``, the napari widget, Markdown model cards)."""
from __future__ import annotations

from typing import Any


def card_summary(card: Any) -> list[tuple[str, str]]:
    """(field, value) rows describing a ModelCard, most important first."""
    model = card.model or {}
    llm = card.llm or {}
    prep = card.preprocessing or {}
    if model.get("llm"):
        kind = "random layer (ablation)" if model.get("llm_init") == "random" else "frozen pre-trained layer"
        llm_text = f"{model['llm']} ({llm.get('arch', model.get('llm_arch', '?'))}, {kind}"
        llm_text += f", {'embedded ' + str(llm.get('dtype', '')) if llm.get('embedded', True) else 'by reference'})"
    else:
        llm_text = "none (CMUNeXt baseline)"
    rows = [
        ("name", card.name),
        ("description", card.description or "-"),
        ("classes", ", ".join(card.classes[1:]) if len(card.classes) > 1 else "-"),
        ("input channels", str(model.get("in_channels", "?"))),
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
