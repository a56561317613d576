"""The eval transform of each model: timm's (from its preprocessing config) or the public
code's legacy one; models with equal preprocessing share one transform object, which is
what lets ``robustft.evaluation.runner.evaluate_models`` compute their input tensor once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T

from robustft.backbones import preprocessing_config
from robustft.labels import check_protocol_kind

__all__ = ["ImageTransform", "build_eval_transforms", "legacy_eval_transform",
           "model_eval_transform"]

ImageTransform = Callable[[Image.Image], Tensor]



def model_eval_transform(config: Mapping[str, Any]) -> ImageTransform:
    """timm's eval transform for a ``preprocessing_config`` dict (input_size, mean, std,
    crop_pct, interpolation[, crop_mode]): resize to size / crop_pct, center crop, to
    tensor, normalise."""
    import timm.data

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    kwargs = {key: config[key] for key in keys if key in config}
    return timm.data.create_transform(**kwargs, is_training=False)


def legacy_eval_transform(image_size: int = 224) -> ImageTransform:
    """The public RobustViT code's eval transform: Resize(256), CenterCrop(224), mean =
    std = 0.5 for every model. For another input size the resize keeps the 256/224 ratio."""
    resize = image_size * 256 // 224
    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ]
    )


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, float):
        return round(value, 8)
    return value


def build_eval_transforms(
    models: Mapping[str, nn.Module], protocol: str = "standard", **overrides: Any
) -> dict[str, ImageTransform]:
    """One eval transform per model; models with equal preprocessing get the SAME object,
    which is what lets :func:`evaluate_models` compute their input tensor once.

    ``protocol="standard"``: each model's own preprocessing, as its family gives it (via
    ``robustft.backbones.preprocessing_config``; ``overrides`` such as ``crop_pct=...``
    replace its keys). ``protocol="legacy"``: :func:`legacy_eval_transform` at each
    model's input size.
    """

    kind = check_protocol_kind(protocol)
    shared: dict[Any, ImageTransform] = {}
    result: dict[str, ImageTransform] = {}
    for model_name, model in models.items():
        config = preprocessing_config(model, **overrides)
        if kind == "legacy":
            height, width = config["input_size"][1:]
            if height != width:
                raise ValueError(
                    f"legacy protocol needs a square input, model {model_name!r} has "
                    f"{height}x{width}"
                )
            key: Any = ("legacy", height)
            if key not in shared:
                shared[key] = legacy_eval_transform(height)
        else:
            key = tuple(sorted((name, _freeze(value)) for name, value in config.items()))
            if key not in shared:
                shared[key] = model_eval_transform(config)
        result[model_name] = shared[key]
    return result
