"""The model configuration: everything needed to rebuild an LLM4Seg network."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

POSITIONS = ("rope", "paper")
ATTENTIONS = ("causal", "bidirectional")
LLM_INITS = ("pretrained", "random", "none")
UPSAMPLES = ("nearest", "bilinear")
#: Prompt channels a model may take after the image channels (``ModelConfig.prompts``), in this order.
PROMPT_CHANNELS = ("previous", "positive", "negative", "box")


@dataclass
class ModelConfig:
    """Architecture of an LLM4Seg model.

    ``llm`` is an LLM descriptor (``smollm2-135m:15``, ``dir:14``, ``file.gguf:14``, ``org/name:14``) or
    ``None`` for the plain CMUNeXt baseline. ``llm_init="random"`` builds a layer of the same shape with
    random weights (ablation); ``llm_init="none"`` keeps only the two adapters (Linear → Linear at the LLM's
    width, no layer between them: the ablation arm that asks whether the layer itself matters). ``position``: ``"rope"`` uses the LLM's own rotary embedding over raster-order
    tokens; ``"paper"`` reproduces the reference code (scalar sin/cos of the token index, passed as
    (sin, cos)). ``llm_arch``/``llm_config`` are filled when the layer is built, so a checkpoint can rebuild
    the network without the LLM installed.

    ``upsample``: the decoder's 2× upsampling, ``"nearest"`` (this project's models) or ``"bilinear"`` (the
    reference CMUNeXt / LLM4Seg code). ``calibrate``: scale the booster's output projection at
    initialisation so the bottleneck keeps its scale (off in the paper's recipe).

    ``prompts``: extra input channels after the image's (``llm4seg.interactive``): the previous mask, the
    positive and negative click maps and optionally a box map, names from :data:`PROMPT_CHANNELS`. Empty for
    an automatic model. A prompted model fed only the image channels sees zero prompts: its automatic mode.
    """

    in_channels: int = 1
    num_classes: int = 1
    dims: tuple[int, ...] = (16, 32, 128, 160, 256)
    depths: tuple[int, ...] = (1, 1, 1, 3, 1)
    kernels: tuple[int, ...] = (3, 3, 7, 7, 7)
    llm: str | None = "smollm2-135m:15"
    llm_init: str = "pretrained"
    position: str = "rope"
    attention: str = "causal"
    upsample: str = "nearest"
    calibrate: bool = True
    prompts: tuple[str, ...] = ()
    llm_arch: str | None = None
    llm_config: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.dims, self.depths, self.kernels = tuple(self.dims), tuple(self.depths), tuple(self.kernels)
        self.prompts = tuple(self.prompts)
        unknown = [p for p in self.prompts if p not in PROMPT_CHANNELS]
        if unknown or len(set(self.prompts)) != len(self.prompts):
            raise ValueError(f"prompts must be distinct names from {PROMPT_CHANNELS}, got {list(self.prompts)}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = binary), got {self.num_classes}")
        if not (len(self.dims) == len(self.depths) == len(self.kernels) == 5):
            raise ValueError("dims, depths and kernels need 5 entries each (one per encoder stage)")
        for name, value, allowed in (
            ("position", self.position, POSITIONS),
            ("attention", self.attention, ATTENTIONS),
            ("llm_init", self.llm_init, LLM_INITS),
            ("upsample", self.upsample, UPSAMPLES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @classmethod
    def faithful(cls, **overrides: Any) -> "ModelConfig":
        """The reference implementation's architecture: bilinear upsampling, the paper's sin/cos positions,
        causal attention, no calibration of the output projection."""
        return cls(**{"upsample": "bilinear", "position": "paper", "attention": "causal", "calibrate": False,
                      **overrides})

    @property
    def uses_llm(self) -> bool:
        return self.llm is not None

    @property
    def stem_channels(self) -> int:
        """Input channels of the stem: the image's plus the prompt channels."""
        return self.in_channels + len(self.prompts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("dims", "depths", "kernels", "prompts"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}: the checkpoint is newer than this llm4seg")
        return cls(**d)
