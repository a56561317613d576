"""What a mask run used: the TokenCut parameters, and the settings file
(``tokencut_settings.json``) that records them with the model and the preprocessing."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robustft.backbones import backbone_of
from robustft.masks.bilateral import BilateralSolverParams
from robustft.masks.tokencut import (
    DEFAULT_EPS,
    DEFAULT_TAU,
    FEATURE_CHOICES,
    OFFICIAL_MIN_FOREGROUND_FRACTION,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "SETTINGS_NAME",
    "TokenCutSettings",
    "model_identity",
    "write_settings",
]

SETTINGS_NAME = "tokencut_settings.json"


@dataclass(frozen=True)
class TokenCutSettings:
    """Algorithm parameters (docs/method.md §4; the defaults are TokenCut's, except that
    ``features="auto"`` cuts the centred keys at the median cosine where the keys' graph is
    degenerate). ``tau``: a number or ``"auto"`` (the median cosine of each image);
    ``features``: one of :data:`~robustft.masks.tokencut.FEATURE_CHOICES`; ``block``: the
    block they come from (-1 = the last)."""

    tau: float | str = DEFAULT_TAU
    eps: float = DEFAULT_EPS
    refine: bool = False
    min_foreground_fraction: float = OFFICIAL_MIN_FOREGROUND_FRACTION
    bilateral: BilateralSolverParams = field(default_factory=BilateralSolverParams)
    # TokenCut inverts a refined mask whose IoU with the coarse one is < 0.5; "coarse"
    # falls back to the coarse mask instead.
    refine_low_iou: str = "invert"
    features: str = "auto"
    block: int = -1

    def __post_init__(self) -> None:
        if self.tau != "auto" and (isinstance(self.tau, (bool, str)) or self.tau is None):
            raise ValueError(f"tau: expected a number or 'auto', got {self.tau!r}")
        if self.features not in FEATURE_CHOICES:
            raise ValueError(f"features: expected one of {list(FEATURE_CHOICES)}, got "
                             f"{self.features!r}")

    @property
    def token_feature(self) -> str:
        """What the backbone is asked for (``Backbone.token_features``): the keys for
        ``auto`` and ``centred_keys``, else the features named."""
        return "keys" if self.features in ("auto", "centred_keys") else self.features


# TokenCut's own parameters, the default of every run (frozen, so one shared value is safe).
DEFAULT_SETTINGS = TokenCutSettings()


def model_identity(model: nn.Module) -> str:
    """What the model is, as its family names it (``Backbone.describe``: a timm model's
    ``pretrained_cfg`` name), else its class name."""
    return backbone_of(model).describe()


def write_settings(
    path: Path,
    model_description: str,
    model: nn.Module,
    layout: str,
    input_dir: str | os.PathLike[str],
    preprocessing: dict[str, Any],
    grid_size: tuple[int, int],
    settings: TokenCutSettings,
) -> None:
    record = {
        "model": model_description,
        "model_class": type(model).__name__,
        "input_dir": str(Path(input_dir).resolve()),
        "input_layout": layout,
        "preprocessing": (
            "each image resized (aspect ratio not kept) to the model input size; mask "
            "upsampled (nearest) from the patch grid to the image's own size"
        ),
        "model_input_size": list(preprocessing["input_size"][1:]),
        "patch_grid": list(grid_size),
        "mean": list(preprocessing["mean"]),
        "std": list(preprocessing["std"]),
        "interpolation": preprocessing.get("interpolation"),
        "mask_format": "single-channel PNG, 0 = background, 255 = foreground",
        "settings": asdict(settings),
        "note": "masks written by an earlier run with other settings are kept (resume)",
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2))
    os.replace(temporary, path)
