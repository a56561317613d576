"""Building a Hugging Face ViT classifier (``ModelSpec(family="hf")``), reading its
preprocessing from the checkpoint's image processor config, and what identifies its
weights in an evaluation fingerprint.

Sources: ``hf_id`` (a hub id, needs network or the hub cache) or ``hf_path`` (a local
folder written by ``save_pretrained``, or a downloaded hub snapshot: ``config.json``, the
weights, ``preprocessor_config.json``). ``num_classes`` re-initialises the head
(``num_labels`` + ``ignore_mismatched_sizes``); ``pretrained=False`` is a random
initialisation from the source's config; ``config_overrides`` (``model.kwargs``) replace
config values, e.g. ``attention_probs_dropout_prob``.

Preprocessing (``preprocessor_config.json``) onto robustft's timm-style dict:

- ``size`` ``{height, width}`` (a resize to exactly that size, aspect not kept):
  ``crop_mode="squash"``; ``size`` ``{shortest_edge}``: ``crop_mode="center"``;
- ``crop_size`` (when ``do_center_crop``) is the ``input_size``, and ``crop_pct`` =
  crop / resize, so that timm resizes to the processor's size first (no crop: 1.0);
- ``image_mean`` / ``image_std`` (identity when ``do_normalize`` is false), ``resample``
  (PIL's codes) as the interpolation name.

Without a processor config the input size is the config's ``image_size`` and mean, std and
interpolation are the defaults of the model type's HF image processor (one log line).

The spec's fields for hf: ``hf_id`` / ``hf_path`` (exactly one), ``pretrained``,
``num_classes``, ``kwargs`` (config overrides) and ``checkpoint``; ``name`` is not needed
(a label at most), ``weights_file`` is refused.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from robustft.backbones.spec import ModelSpec

__all__ = ["PREPROCESSING_ATTRIBUTE", "SUPPORTED_MODEL_TYPES", "build_hf", "check_hf_spec",
           "create_hf_model", "data_config_from_processor", "default_data_config",
           "hf_weights_identity"]

log = logging.getLogger(__name__)

# The model's own preprocessing, set by create_hf_model (a timm model keeps its
# `pretrained_cfg` the same way): the adapter is a stateless view of the model.
PREPROCESSING_ATTRIBUTE = "robustft_preprocessing"

SUPPORTED_MODEL_TYPES = ("beit", "deit", "dinov2", "dinov2_with_registers", "siglip", "vit")
PROCESSOR_FILE = "preprocessor_config.json"
_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                  "pytorch_model.bin.index.json")
# PIL resampling codes (transformers' `resample`) -> timm interpolation names
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _source(hf_id: str | None, hf_path: str | None, key: str) -> tuple[str, str]:
    """(source for from_pretrained, the config key that gave it)."""
    if bool(hf_id) == bool(hf_path):
        given = "both" if hf_id else "neither"
        raise ValueError(f"{key}.hf_id / {key}.hf_path: give exactly one (a hub id or a local "
                         f"save_pretrained folder) for family=hf, got {given}")
    if hf_id:
        return str(hf_id), f"{key}.hf_id"
    folder = Path(str(hf_path)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}.hf_path: {folder} is not a folder (expected one written "
                                "by save_pretrained)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{key}.hf_path: {folder} has no config.json (expected a folder "
                                "written by save_pretrained or a downloaded hub snapshot)")
    return str(folder), f"{key}.hf_path"


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split()) or 'no message'}"


def _load_config(source: str, source_key: str, num_classes: int | None,
                 overrides: dict[str, Any]):
    from transformers import AutoConfig

    extra = dict(overrides)
    if num_classes is not None:
        extra["num_labels"] = int(num_classes)
    try:
        config = AutoConfig.from_pretrained(source, **extra)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        hint = ("; without network, save the model with save_pretrained and set hf_path"
                if source_key.endswith("hf_id") else "")
        raise ValueError(f"{source_key}: cannot read the config of {source} "
                         f"({_one_line(error)}){hint}") from error
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{source_key}: {source} is a {config.model_type!r} model "
                         f"({type(config).__name__}); robustft explains ViT-family image "
                         f"classifiers {list(SUPPORTED_MODEL_TYPES)}: the rollout needs one "
                         "token sequence across blocks")
    return config


def create_hf_model(*, hf_id: str | None = None, hf_path: str | None = None,
                    pretrained: bool = True, num_classes: int | None = None, key: str = "model",
                    **config_overrides: Any) -> nn.Module:
    """A supported ``AutoModelForImageClassification`` (module docstring), with its
    preprocessing attached; bad input is one line naming ``key.hf_id`` / ``key.hf_path``."""
    from transformers import AutoModelForImageClassification

    source, source_key = _source(hf_id, hf_path, key)
    config = _load_config(source, source_key, num_classes, config_overrides)
    if not pretrained:
        model = AutoModelForImageClassification.from_config(config)
    else:
        if hf_path and not any((Path(source) / name).is_file() for name in _WEIGHTS_FILES):
            raise FileNotFoundError(f"{source_key}: {source} has no weights ({', '.join(_WEIGHTS_FILES)}"
                                    f"); set {key}.pretrained=false for random weights")
        try:
            model = AutoModelForImageClassification.from_pretrained(
                source, config=config, ignore_mismatched_sizes=num_classes is not None)
        except OSError as error:
            raise OSError(f"{source_key}: cannot load the weights of {source} "
                          f"({_one_line(error)})") from error
    setattr(model, PREPROCESSING_ATTRIBUTE, _read_data_config(source, source_key, config))
    # from_pretrained returns eval mode; a built model is in training mode, as timm's are
    # (Lightning keeps each module's mode at the start of fit; evaluation calls .eval())
    return model.train()


def _read_data_config(source: str, source_key: str, config) -> dict[str, Any]:
    from transformers import AutoImageProcessor

    if source_key.endswith("hf_path") and not (Path(source) / PROCESSOR_FILE).is_file():
        log.info("%s: %s has no %s; preprocessing: the config's image_size with the %s image "
                 "processor's defaults", source_key, source, PROCESSOR_FILE, config.model_type)
        return default_data_config(config)
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{source_key}: cannot read the image processor config of {source} "
                         f"({_one_line(error)})") from error
    return data_config_from_processor(processor, f"{source_key} {source}/{PROCESSOR_FILE}")


def _default_processor(model_type: str):
    from transformers import (
        BeitImageProcessor,
        BitImageProcessor,
        DeiTImageProcessor,
        SiglipImageProcessor,
        ViTImageProcessor,
    )

    # the classes transformers' AutoImageProcessor maps these model types to
    return {"vit": ViTImageProcessor, "deit": DeiTImageProcessor,
            "beit": BeitImageProcessor, "siglip": SiglipImageProcessor}.get(model_type, BitImageProcessor)()


def default_data_config(config) -> dict[str, Any]:
    """Preprocessing of a model without a processor config: its ``image_size`` (no crop),
    and the mean, std and interpolation of its model type's default image processor."""
    vision = getattr(config, "vision_config", None) or config  # SigLIP: the vision settings
    height, width = (vision.image_size if isinstance(vision.image_size, (list, tuple))
                     else (vision.image_size, vision.image_size))
    data = data_config_from_processor(_default_processor(config.model_type), config.model_type)
    return {**data, "input_size": (3, int(height), int(width)), "crop_pct": 1.0,
            "crop_mode": "squash"}


def _size(value: Any) -> dict[str, int]:
    """A processor's ``size`` / ``crop_size`` (dict, SizeDict or int) as its set keys."""
    if value is None:
        return {}
    if isinstance(value, int):
        return {"height": value, "width": value}
    items = value.items() if hasattr(value, "items") else vars(value).items()
    return {name: int(number) for name, number in items if number is not None}


def _interpolation(resample: Any, where: str) -> str:
    if hasattr(resample, "value") and isinstance(resample.value, str):  # torchvision's mode
        return resample.value
    try:
        return _RESAMPLE_NAMES[int(resample)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: resample {resample!r} is not one of PIL's codes "
                         f"{sorted(_RESAMPLE_NAMES)}") from None


def data_config_from_processor(processor: Any, where: str) -> dict[str, Any]:
    """A transformers image processor's settings as robustft's timm-style dict (module
    docstring); ``where`` names the processor config in errors."""
    size = _size(getattr(processor, "size", None)) if getattr(processor, "do_resize", True) else {}
    crop = _size(getattr(processor, "crop_size", None)) if getattr(
        processor, "do_center_crop", False) else {}
    if "height" in size and "width" in size:
        resized, crop_mode = (size["height"], size["width"]), "squash"
    elif "shortest_edge" in size:
        resized, crop_mode = (size["shortest_edge"],) * 2, "center"
    elif crop:
        resized, crop_mode = None, "center"
    else:
        raise ValueError(f"{where}: no usable size (expected size {{height, width}} or "
                         f"{{shortest_edge}}, or a crop_size), got size={size} crop_size={crop}")
    if crop:
        input_hw = (crop["height"], crop["width"])
        crop_pct = 1.0 if resized is None else input_hw[0] / resized[0]
        if resized is not None and math.floor(input_hw[0] / crop_pct) != resized[0]:
            # timm resizes to floor(input / crop_pct): keep that the processor's size
            crop_pct = input_hw[0] / (resized[0] + 0.5)
    else:
        input_hw, crop_pct = resized, 1.0
    if getattr(processor, "do_normalize", True):
        mean = tuple(float(x) for x in processor.image_mean)
        std = tuple(float(x) for x in processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return {"input_size": (3, int(input_hw[0]), int(input_hw[1])), "mean": mean, "std": std,
            "crop_pct": float(crop_pct), "crop_mode": crop_mode,
            "interpolation": _interpolation(getattr(processor, "resample", 3), where)}


def check_hf_spec(spec: ModelSpec, key: str) -> None:
    """The hf family's own rule: its weights come from its source, not a weights file."""
    if spec.weights_file:
        raise ValueError(f"{key}.weights_file is timm's; a Hugging Face model (family=hf) reads "
                         f"its weights from {key}.hf_path or {key}.hf_id")


def build_hf(spec: ModelSpec, key: str) -> nn.Module:
    """The ``ModelSpec(family="hf")`` builder (module docstring)."""
    num_classes = spec.num_classes
    if spec.probe_head and num_classes is None:  # the classifier the probe is written into
        from robustft.backbones.heads.probe_head import read_probe_head

        num_classes = read_probe_head(spec.probe_head, f"{key}.probe_head").num_classes
    return create_hf_model(hf_id=spec.hf_id, hf_path=spec.hf_path, key=key,
                           pretrained=spec.pretrained and not spec.checkpoint,
                           num_classes=num_classes, **spec.kwargs)


# the files of a save_pretrained folder that decide the model and its preprocessing
_HF_FOLDER_FILES = ("config.json", "preprocessor_config.json", "model.safetensors",
                    "model.safetensors.index.json", "pytorch_model.bin")


def hf_weights_identity(entry: Mapping[str, Any], key: str, sha256: Callable[[str, str], str]
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """A Hugging Face entry's source in a fingerprint: the hub id, or the sha256 of each
    model file of the ``hf_path`` folder (sharded weights: their index; the shards it names
    are not hashed), and the transformers version (which resolves the config and the
    processor); and the folder's path as a source."""
    import transformers

    folder = entry.get("hf_path") or None
    digests, sources = None, {}
    if folder is not None:
        sources["hf_path"] = str(Path(folder).resolve())
        digests = {name: "sha256:" + sha256(str(Path(folder) / name), f"{key}.hf_path")
                   for name in _HF_FOLDER_FILES if (Path(folder) / name).is_file()}
    return ({"hf_id": entry.get("hf_id") or None, "hf_path": digests,
             "transformers": transformers.__version__}, sources)
