"""The typed schemas of robustft's Hydra configs.

Each config group's YAML files start from one of these (``defaults: [base_<group>, _self_]``),
so a wrong type or an unknown key is refused when the config is composed, with the key's
full name (``trainer.max_epochs``, ``loss.lambda_bg``), before any model or data is built.
The method's own settings are the method's dataclasses (``robustft.losses.LossConfig``,
``robustft.relevance.RelevanceConfig``, ``robustft.backbones.ModelSpec``); the Lightning
Trainer's and the DataModules' schemas are read from their signatures
(:mod:`robustft.config.signature`); the entry points' top-level keys are declared here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pytorch_lightning as pl
from omegaconf import MISSING

from robustft.benchmark.config import SynthConfig
from robustft.config.signature import schema_from_signature
from robustft.data.datamodule import ImageMaskDataModule, ImageNetSDataModule
from robustft.relevance import ExplainedClass, RelevanceBackend

__all__ = [
    "CompareSettings", "DemoConfig", "EvalConfig", "ExplainConfig", "MasksConfig", "OptimConfig",
    "PathsConfig", "TrainConfig",
    "TRAINER_SCHEMA", "GENERIC_DATA_SCHEMA", "IMAGENET_S_DATA_SCHEMA", "SUITE_SCHEMA",
]

# ------------------------------------------------------------------ groups: optim, paths


@dataclass
class OptimizerConfig:
    """``parameters -> Optimizer``, built by Hydra as a partial (AdamW by default; another
    ``_target_`` may take more keys, e.g. ``+optim.optimizer.betas=[0.9,0.95]``)."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 3e-6
    weight_decay: float = 1e-4


@dataclass
class SchedulerConfig:
    """``optimizer -> LRScheduler`` stepped once per epoch; the paper's lr*0.85^(epoch//2)."""

    _target_: str = "robustft.training.module.step_decay_scheduler"
    _partial_: bool = True
    gamma: float = 0.85
    every: int = 2


@dataclass
class OptimConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig | None = field(default_factory=SchedulerConfig)
    frozen: list[str] = field(default_factory=list)  # parameter-name prefixes not trained


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = MISSING
    cache_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


# ------------------------------------------------------- groups read from their signatures

TRAINER_SCHEMA = schema_from_signature(pl.Trainer, "TrainerConfig",
                                       exclude=("logger", "callbacks", "plugins"))
_SYNTH_SCHEMA = schema_from_signature(SynthConfig, "SynthSettings", with_target=False)
# the generated benchmark's settings ride on the data config that reads it (data=synth)
_SYNTH_FIELD = ("synth", _SYNTH_SCHEMA | None, field(default=None))
# and its name (its folder under paths.data_dir), which keys the demo's cached stand-in
_BENCHMARK_FIELD = ("benchmark", str | None, field(default=None))
GENERIC_DATA_SCHEMA = schema_from_signature(ImageMaskDataModule, "GenericDataConfig",
                                            exclude=("mask_decoder",),
                                            extra=[_SYNTH_FIELD, _BENCHMARK_FIELD])
IMAGENET_S_DATA_SCHEMA = schema_from_signature(
    ImageNetSDataModule, "ImageNetSDataConfig", inherit=ImageMaskDataModule,
    # the paper split has its own class choice, masks and label order: these would do nothing
    exclude=("root", "mask_decoder", "class_fraction", "mask_manifest", "class_index"))


@dataclass
class SuiteConfig:
    """An evaluation suite: its name and its datasets (``{type, root, ...}`` each; the keys
    beyond type and root depend on the type, see ``robustft.data.eval.registry``)."""

    name: str = MISSING
    datasets: dict[str, Any] = field(default_factory=dict)
    benchmark_root: str | None = None


SUITE_SCHEMA = SuiteConfig

# ---------------------------------------------------------------- top level: the commands


@dataclass
class TrainConfig:
    """``robustft-train``'s top level; the groups carry their own schemas."""

    task_name: str = "train"
    seed: int = 0
    ckpt_path: str | None = None  # a Lightning checkpoint to resume from
    validate_best: bool = True  # validate the best checkpoint again after fitting
    data: Any = MISSING
    model: Any = MISSING
    relevance: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    paths: Any = MISSING


@dataclass
class PretrainConfig:
    """The demo's stand-in for ImageNet pre-training (plain cross-entropy from scratch)."""

    data_root: str = MISSING
    max_epochs: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    batch_size: int = 64
    num_workers: int = 0
    resize_ratio: float = 1.0


class CheckpointChoice(StrEnum):
    last = "last"
    best = "best"


@dataclass
class DemoEvaluationConfig:
    checkpoint: CheckpointChoice = CheckpointChoice.last
    splits: list[str] = field(default_factory=list)
    batch_size: int = 128
    relevance_images_per_split: int = 256
    overlay_images: int = 8
    background_fill: float = 0.28


@dataclass
class CompareSettings:
    """``robustft-compare``: which benchmarks (data config names), draws (``data.seed``) and
    objectives (name -> overrides of the demo's recipe) it runs, the overrides that make the
    shortcut-free reference's benchmark (empty: no reference), the splits of its tables
    (null: ``evaluation.splits``), the README whose ``compare`` block it rewrites, and how
    many fine-tuning runs go at a time (``jobs``; null: one per CPU core)."""

    benchmarks: list[str] = field(default_factory=lambda: ["synth"])
    draws: list[int] = field(default_factory=lambda: [0, 1, 2])
    objectives: dict[str, list[str]] = field(default_factory=dict)
    reference_overrides: list[str] = field(default_factory=list)
    splits: list[str] | None = None
    readme: str | None = None
    keep_checkpoints: bool = False
    jobs: int | None = None


@dataclass
class DemoConfig(TrainConfig):
    # MISSING, not TrainConfig's None: demo.yaml merges this schema after train.yaml, and a
    # None here would erase the loggers and callbacks (last.ckpt, best-*.ckpt) train composed
    logger: Any = MISSING
    callbacks: Any = MISSING
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    evaluation: DemoEvaluationConfig = field(default_factory=DemoEvaluationConfig)
    # robustft-compare's settings (compare.yaml = demo.yaml + these); None for the demo
    compare: CompareSettings | None = None


class Protocol(StrEnum):
    standard = "standard"
    legacy = "legacy"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class PreprocessingOverrides:
    crop_pct: float | None = None
    interpolation: str | None = None
    crop_mode: str | None = None  # timm's: center | squash (Resize((h, w)), no crop) | border


class EvalMetric(StrEnum):
    """robustft-eval's ``metrics`` (robustft.evaluation.explanation.Metric)."""

    top1 = "top1"  # with top-5
    perturbation = "perturbation"
    segmentation = "segmentation"
    share = "share"


@dataclass
class PerturbationSettings:
    """The perturbation test (robustft.evaluation.perturbation): the removed fractions
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
    batch_size: int = 64
    num_workers: int | None = None  # None = the CPUs this process may use
    device: str = "auto"
    precision: Precision = Precision.fp32
    progress: bool = True
    plots: bool = True
    metrics: list[EvalMetric] = field(default_factory=lambda: [EvalMetric.top1])
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


@dataclass
class MasksConfig:
    """``robustft-masks``'s top level (TokenCut)."""

    task_name: str = "masks"
    input_dir: str = MISSING
    output_dir: str = MISSING
    layout: MaskInputLayout = MaskInputLayout.auto
    model: Any = MISSING  # a ModelSpec (the model group's schema)
    tau: float = 0.2
    eps: float = 1e-5
    refine: bool = False
    refine_low_iou: str = "invert"
    min_foreground_fraction: float = 0.010364
    batch_size: int = 32
    num_workers: int | None = None
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True


class ExplainTargetChoice(StrEnum):
    predicted = "predicted"
    label = "label"
    topk = "topk"


@dataclass
class ExplainConfig:
    """``robustft-explain``'s top level (``robustft.evaluation.explain``): ``image`` (a
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
    max_images: int | None = None
    backend: RelevanceBackend = RelevanceBackend.eager
    scale: int | None = None
    max_image_pixels: int | None = 50_000_000  # larger images refused before decoding
    device: str = "auto"
    progress: bool = True
    output_dir: str = MISSING
    paths: Any = MISSING


def field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]
