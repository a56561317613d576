"""The typed schemas of robustft's Hydra configs.

Each config group's YAML files start from one of these (``defaults: [base_<group>, _self_]``),
so a wrong type or an unknown key is refused when the config is composed, with the key's
full name (``trainer.max_epochs``, ``loss.lambda_bg``), before any model or data is built.
The method's own settings are the method's dataclasses (``robustft.losses.LossConfig``,
``robustft.relevance.RelevanceConfig``, ``robustft.backbones.ModelSpec``); the Lightning
Trainer's and the DataModules' schemas are read from their signatures
(:mod:`robustft.schemas.signature`); the top-level keys of the training entry points are declared
here, those of the commands that read a model without training it in
:mod:`robustft.schemas.inspection_schemas`.
The values a numeric key may take are declared here too, on its field (``allowed=`` of a
signature's schema, ``metadata=allowed(...)`` of a written one; :mod:`robustft.schemas.allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pytorch_lightning as pl
from omegaconf import MISSING

from robustft.data.datamodule import ImageMaskDataModule, ImageNetSDataModule
from robustft.schemas.allowed import above, allowed, at_least, between
from robustft.schemas.signature import schema_from_signature
from robustft.synth.config import SynthConfig

__all__ = [
    "ALL_CPUS", "CompareSettings", "DemoConfig", "OptimConfig", "PathsConfig", "SAMPLERS",
    "TrainConfig", "TuneConfig", "TuneSettings", "TRAINER_SCHEMA", "GENERIC_DATA_SCHEMA",
    "IMAGENET_S_DATA_SCHEMA", "SUITE_SCHEMA",
]

# ------------------------------------------------------------------ groups: optim, paths


@dataclass
class OptimizerConfig:
    """``parameters -> Optimizer``, built by Hydra as a partial (AdamW by default; another
    ``_target_`` may take more keys, e.g. ``+optim.optimizer.betas=[0.9,0.95]``)."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = field(default=3e-6, metadata=allowed(at_least(0)))
    weight_decay: float = field(default=1e-4, metadata=allowed(at_least(0)))


@dataclass
class SchedulerConfig:
    """``optimizer -> LRScheduler`` stepped once per epoch; the paper's lr*0.85^(epoch//2)."""

    _target_: str = "robustft.training.module.step_decay_scheduler"
    _partial_: bool = True
    gamma: float = field(default=0.85, metadata=allowed(above(0)))
    every: int = field(default=2, metadata=allowed(at_least(1)))


@dataclass
class OptimConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig | None = field(default_factory=SchedulerConfig)
    frozen: list[str] = field(default_factory=list)  # parameter-name prefixes not trained
    # a caption run (data.captions): train the text tower too (frozen by default)
    train_text_tower: bool = False


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = MISSING
    cache_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


# ------------------------------------------------------- groups read from their signatures

# the Trainer's counts that it takes without complaint and then trains nothing with, or
# divides by (accumulate_grad_batches=0: ZeroDivisionError after training starts)
_NOTHING_TRAINED = "0 trains nothing and writes no checkpoint"
TRAINER_SCHEMA = schema_from_signature(
    pl.Trainer, "TrainerConfig", exclude=("logger", "callbacks", "plugins"),
    allowed={"max_epochs": at_least(1, also=(-1,), note=f"-1: no limit; {_NOTHING_TRAINED}"),
             "max_steps": at_least(1, also=(-1,), note=f"-1: no limit; {_NOTHING_TRAINED}"),
             "min_epochs": at_least(0), "min_steps": at_least(0),
             "accumulate_grad_batches": at_least(1), "check_val_every_n_epoch": at_least(1),
             "log_every_n_steps": at_least(0), "num_nodes": at_least(1),
             "gradient_clip_val": at_least(0), "num_sanity_val_steps": at_least(0, also=(-1,)),
             "limit_train_batches": above(0, note=f"a share of the batches or a count; {_NOTHING_TRAINED}"),
             "val_check_interval": above(0, numbers_only=True),
             "devices": at_least(1, also=(-1,), numbers_only=True, note="-1: every device")})
# a seed numpy, torch and random all take
SEED = between(0, 2**32 - 1)
ALL_CPUS = at_least(0, null="the CPUs this process may use")  # DataLoader workers
# the DataModules' values that torch / torchvision refuse only once the model is built
_DATA_ALLOWED = {
    "batch_size": at_least(1), "num_workers": at_least(0), "seed": SEED,
    "train_per_class": at_least(1, null="all"), "val_per_class": at_least(0, null="all"),
    "class_fraction": between(0, 1, low_open=True),
    "hflip": between(0, 1, note="the probability of a horizontal flip"),
    "resize_ratio": at_least(1, note="the images are resized to resize_ratio x crop_size, then cropped"),
    "crop_size": at_least(1), "std": above(0), "unmasked_per_class": at_least(1, null="all"),
    "holdout_per_class": at_least(0, null="none"),
    "unmasked_holdout_per_class": at_least(0, null="none")}
_SYNTH_SCHEMA = schema_from_signature(SynthConfig, "SynthSettings", with_target=False)
# the generated benchmark's settings ride on the data config that reads it (data=synth)
_SYNTH_FIELD = ("synth", _SYNTH_SCHEMA | None, field(default=None))
# and its name (its folder under paths.data_dir), which keys the demo's cached stand-in
_BENCHMARK_FIELD = ("benchmark", str | None, field(default=None))
GENERIC_DATA_SCHEMA = schema_from_signature(
    ImageMaskDataModule, "GenericDataConfig", exclude=("mask_decoder",),
    extra=[_SYNTH_FIELD, _BENCHMARK_FIELD], allowed=_DATA_ALLOWED)
IMAGENET_S_DATA_SCHEMA = schema_from_signature(
    ImageNetSDataModule, "ImageNetSDataConfig", inherit=ImageMaskDataModule,
    # the paper split has its own class choice, masks and label order: these would do nothing
    exclude=("root", "mask_decoder", "class_fraction", "mask_manifest", "class_index",
             "captions"),
    allowed={**_DATA_ALLOWED, "num_train_classes": at_least(1)})


@dataclass
class SuiteConfig:
    """An evaluation suite: its name and its datasets (``{type, root, ...}`` each; the keys
    beyond type and root depend on the type, see ``robustft.data.eval.registry``), the user's
    own folders (``folders``), and how its images are prepared by default."""

    name: str = MISSING
    datasets: dict[str, Any] = field(default_factory=dict)
    benchmark_root: str | None = None
    # the user's own labelled folders, each one dataset (robustft.evaluation.run.folder_datasets)
    folders: list[str] = field(default_factory=list)
    # the default of preprocessing.source for this suite (null: model)
    preprocessing_source: str | None = None


SUITE_SCHEMA = SuiteConfig

# ---------------------------------------------------------------- top level: the commands


@dataclass
class TrainConfig:
    """``robustft-train``'s top level; the groups carry their own schemas."""

    task_name: str = "train"
    seed: int = field(default=0, metadata=allowed(SEED))
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
    max_epochs: int = field(default=16, metadata=allowed(at_least(1)))
    lr: float = field(default=1e-3, metadata=allowed(above(0)))
    weight_decay: float = field(default=0.05, metadata=allowed(at_least(0)))
    warmup_epochs: int = field(default=1, metadata=allowed(at_least(0)))
    batch_size: int = field(default=64, metadata=allowed(at_least(1)))
    num_workers: int = field(default=0, metadata=allowed(at_least(0)))
    resize_ratio: float = field(default=1.0, metadata=allowed(at_least(1)))
    # experiment=demo_real: the stand-in is a pretrained backbone with a linear probe fitted
    # on this many pretrain images of each class (null = all), with this L2 penalty
    head_per_class: int | None = field(default=None, metadata=allowed(at_least(1)))
    head_weight_decay: float = field(default=1e-3, metadata=allowed(at_least(0)))
    head_data: str = "backgrounds"  # scenes | backgrounds | backgrounds_only (demo/stand_in.py)


class CheckpointChoice(StrEnum):
    last = "last"
    best = "best"
    selected = "selected"


@dataclass
class DemoEvaluationConfig:
    checkpoint: CheckpointChoice = CheckpointChoice.last
    splits: list[str] = field(default_factory=list)
    batch_size: int = field(default=128, metadata=allowed(at_least(1)))
    relevance_images_per_split: int = field(default=256, metadata=allowed(at_least(1)))
    overlay_images: int = field(default=8, metadata=allowed(at_least(0)))
    background_fill: float = field(default=0.28, metadata=allowed(between(0, 1)))


SAMPLERS = ("tpe", "random", "grid")
#: robustft-tune's default search space (docs/method.md §10 says why these keys and ranges)
DEFAULT_SEARCH = (
    "optim.optimizer.lr=tag(log, interval(3e-5, 1e-3))",
    "loss.lambda_fg=tag(log, interval(0.1, 1.0))",
    "loss.lambda_l2sp=choice(0.0, 10.0, 100.0)",
)


@dataclass
class TuneSettings:
    """The ``tune`` node of ``robustft-tune`` (``configs/tune.yaml``).

    ``search``: Hydra sweep overrides, as a ``-m`` command line takes them
    (``optim.optimizer.lr=tag(log, interval(3e-5, 1e-3))``; a plain ``key=value`` is fixed
    for every trial); ``sampler``:
    ``tpe`` | ``random`` | ``grid`` (``choice`` / ``range`` only); ``max_trials`` (null:
    the grid's size, or 20); ``time_budget_min``: no trial starts when the mean trial time
    so far would carry the search past it (null: no limit); ``seed``: the sampler's;
    ``startup_trials``: random trials before TPE models the results; ``include_base``: the
    base config's own values of the searched keys are the first trial (so the search never
    ends below the recipe it started from); ``keep_checkpoints``: keep every trial's
    ``selected.ckpt`` (default: only the chosen trial's)."""

    search: list[str] = field(default_factory=lambda: list(DEFAULT_SEARCH))
    sampler: str = "tpe"
    max_trials: int | None = 12
    time_budget_min: float | None = 25.0
    seed: int = 0
    startup_trials: int = 4
    include_base: bool = True
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"tune.sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"tune.max_trials must be >= 1 or null, got {self.max_trials}")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ValueError(f"tune.time_budget_min must be > 0 or null, got {self.time_budget_min}")


@dataclass
class CompareSettings:
    """``robustft-compare``: which benchmarks (data config names), draws (``data.seed``) and
    objectives (name -> overrides of the demo's recipe) it runs, the overrides that make the
    shortcut-free reference's benchmark (empty: no reference), the splits of its tables
    (null: ``evaluation.splits``), the Markdown page whose marked block it rewrites (``docs/demo.md``), how
    many fine-tuning runs go at a time (``jobs``; null: one per CPU core), the objectives
    tuned per draw on held-out masks (``tune_objectives`` with ``tune``) and the control of
    the bars table (``bars_control``)."""

    benchmarks: list[str] = field(default_factory=lambda: ["synth"])
    draws: list[int] = field(default_factory=lambda: [0, 1, 2])
    objectives: dict[str, list[str]] = field(default_factory=dict)
    reference_overrides: list[str] = field(default_factory=list)
    splits: list[str] | None = None
    readme: str | None = None
    readme_block: str = "compare"  # the <!-- <name>:begin/end --> block of the readme page
    keep_checkpoints: bool = False
    jobs: int | None = field(default=None, metadata=allowed(at_least(1, null="one per CPU core")))
    # objectives whose recipe robustft-tune's search (``tune``) chooses on each draw's own
    # training pool (name -> the overrides it starts from), and the objective the bars
    # table compares every objective with (null: no bars table)
    tune_objectives: dict[str, list[str]] = field(default_factory=dict)
    tune: TuneSettings | None = None
    bars_control: str | None = None


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


@dataclass
class TuneConfig(TrainConfig):
    """``robustft-tune``'s top level: ``robustft-train``'s, and the search (``tune``)."""

    # MISSING, not TrainConfig's None: as for DemoConfig, tune.yaml merges this schema after
    # train.yaml, and a None would erase the loggers and callbacks train composed
    logger: Any = MISSING
    callbacks: Any = MISSING
    tune: TuneSettings = field(default_factory=TuneSettings)
