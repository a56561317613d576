"""The typed schemas of the commands that read a model without training it:
``robustft-eval``, ``robustft-masks``, ``robustft-head`` and ``robustft-explain`` (the training
entry points' are in :mod:`robustft.schemas.schemas`; both are registered by
:mod:`robustft.schemas.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import MISSING

from robustft.masks.settings import DEFAULT_SETTINGS
from robustft.relevance import ExplainedClass, RelevanceBackend
from robustft.schemas.allowed import allowed, at_least, between
from robustft.schemas.schemas import ALL_CPUS

__all__ = ["EvalConfig", "ExplainConfig", "HeadConfig", "MasksConfig"]


class Protocol(StrEnum):
    standard = "standard"
    legacy = "legacy"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class PreprocessingOverrides:
    # model | training (robustft.evaluation.run.preprocessing_overrides); null: the suite's
    # preprocessing_source, else model
    source: str | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    crop_mode: str | None = None  # timm's: center | squash (Resize((h, w)), no crop) | border


@dataclass
class PerturbationSettings:
    """The perturbation test (robustft.evaluation.metrics.perturbation_curves): the removed fractions
    (also the AUC's x-grid), the value a removed pixel takes before normalisation, and the
    class whose relevance orders the pixels."""

    fractions: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    removal_value: float = 0.0
    target: ExplainedClass = ExplainedClass.predicted


@dataclass
class ShareSettings:
    """The foreground share of relevance: the explained class (the demo's: the label)."""

    target: ExplainedClass = ExplainedClass.label


@dataclass
class RolloutOptions:
    """``rollout``'s options: the first block of the product (0-based; the public
    segmentation and perturbation scripts use 1)."""

    start_layer: int = 0


@dataclass
class MethodOptions:
    """``method_options.<method>.*``: a relevance method's own options, used whenever that
    method runs (``robustft.relevance.RELEVANCE_METHODS[...].options``)."""

    rollout: RolloutOptions = field(default_factory=RolloutOptions)


@dataclass
class EvalConfig:
    """``robustft-eval``'s top level. ``models`` maps labels to model specs (checked as
    ``ModelSpec`` when the run starts, so that ``+models.<label>.name=...`` can add one)."""

    task_name: str = "eval"
    data_root: str = MISSING
    models: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol = Protocol.standard
    preprocessing: PreprocessingOverrides = field(default_factory=PreprocessingOverrides)
    only: Any = None  # a dataset name or a list of names
    skip_missing: bool = False
    batch_size: int = field(default=64, metadata=allowed(at_least(1)))
    num_workers: int | None = field(default=None, metadata=allowed(ALL_CPUS))
    device: str = "auto"
    precision: Precision = Precision.fp32
    progress: bool = True
    plots: bool = True
    # names in robustft.evaluation.metrics.EVAL_METRICS (checked when the run starts)
    metrics: list[str] = field(default_factory=lambda: ["top1"])
    relevance_method: str = "grad_rollout"  # a name in robustft.relevance.RELEVANCE_METHODS
    method_options: MethodOptions = field(default_factory=MethodOptions)
    perturbation: PerturbationSettings = field(default_factory=PerturbationSettings)
    share: ShareSettings = field(default_factory=ShareSettings)
    run_name: str = MISSING
    output_dir: str = MISSING
    eval: Any = MISSING
    paths: Any = MISSING


class MaskInputLayout(StrEnum):
    auto = "auto"
    generic = "generic"
    imagefolder = "imagefolder"


class TokenCutFeatures(StrEnum):
    auto = "auto"
    keys = "keys"
    centred_keys = "centred_keys"
    queries = "queries"
    values = "values"
    output = "output"


@dataclass
class MasksConfig:
    """``robustft-masks``'s top level (TokenCut)."""

    task_name: str = "masks"
    input_dir: str = MISSING
    output_dir: str = MISSING
    layout: MaskInputLayout = MaskInputLayout.auto
    model: Any = MISSING  # a ModelSpec (the model group's schema)
    # TokenCut's parameters: their defaults are TokenCutSettings' (robustft/masks/settings.py)
    tau: Any = DEFAULT_SETTINGS.tau  # a number or "auto" (checked by TokenCutSettings)
    eps: float = DEFAULT_SETTINGS.eps
    features: TokenCutFeatures = TokenCutFeatures(DEFAULT_SETTINGS.features)
    block: int = DEFAULT_SETTINGS.block
    compare_to: str | None = None
    refine: bool = DEFAULT_SETTINGS.refine
    refine_low_iou: str = DEFAULT_SETTINGS.refine_low_iou
    min_foreground_fraction: float = field(default=DEFAULT_SETTINGS.min_foreground_fraction,
                                           metadata=allowed(between(0, 1)))
    batch_size: int = field(default=32, metadata=allowed(at_least(1)))
    num_workers: int | None = field(default=None, metadata=allowed(ALL_CPUS))
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True


class HeadKind(StrEnum):
    linear = "linear"
    prototypes = "prototypes"


@dataclass
class HeadConfig:
    """``robustft-head``'s top level (``robustft.cli.head``): fit a head on a backbone's
    frozen features from a folder of labelled images."""

    task_name: str = "head"
    images: str = MISSING  # <images>/<class>/<name> or <images>/images/<class>/<name>
    output: str = MISSING  # the head file (.safetensors)
    model: Any = MISSING  # a ModelSpec (the model group's schema)
    kind: HeadKind = HeadKind.linear
    per_class: int | None = None  # at most this many images of each class (sorted); null = all
    weight_decay: float = 1e-3  # kind=linear: the L2 penalty
    scale: float = 20.0  # kind=prototypes: scores = scale * cosine
    batch_size: int = 32
    device: str = "auto"


class ExplainTargetChoice(StrEnum):
    predicted = "predicted"
    label = "label"
    topk = "topk"


@dataclass
class ExplainConfig:
    """``robustft-explain``'s top level (``robustft.evaluation.explain.figures``): ``image`` (a
    file, a list, or a folder), the models (``model`` = one ModelSpec, the shorthand, and/or
    ``models.<label>`` as in robustft-eval), ``methods``, the explained classes (``target``
    with ``k``, or ``classes``)."""

    task_name: str = "explain"
    image: Any = MISSING  # a file, a list of files, or a folder
    model: Any = MISSING  # a ModelSpec (the model group's schema); its name ??? = unused
    models: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["grad_rollout"])
    method_options: MethodOptions = field(default_factory=MethodOptions)
    target: ExplainTargetChoice = ExplainTargetChoice.predicted
    k: int = 3
    classes: list[Any] = field(default_factory=list)  # class names (or indices) to explain
    class_names: str | None = None  # a file: the models' class names, one per line, head order
    texts: list[str] = field(default_factory=list)  # free prompts (image-text models)
    image_start_layer: int = -1  # texts=: first image block of the rollout (-1: the last)
    text_start_layer: int = -1  # texts=: first text block of the rollout (-1: the last)
    max_images: int | None = None
    backend: RelevanceBackend = RelevanceBackend.eager
    scale: int | None = None
    max_image_pixels: int | None = 50_000_000  # larger images refused before decoding
    device: str = "auto"
    progress: bool = True
    output_dir: str = MISSING
    paths: Any = MISSING
