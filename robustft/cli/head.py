"""``robustft-head``: a classifier for a backbone that has none, fitted on the frozen
features of a folder of labelled images (Hydra entry point, ``configs/head.yaml``).

    robustft-head images=/data/few output=probe.safetensors \
        model.name=vit_small_patch14_dinov2 model.weights_file=/w/dinov2_s14.safetensors

The labels are the sorted class-folder positions (the class names go into the file);
every image is preprocessed with the model's eval transform. ``kind=linear`` writes a
linear probe (``model.probe_head=<file>``), ``kind=prototypes`` class-mean prototypes as a
zero-shot head (``model.zero_shot.embeddings_file=<file>``);
:mod:`robustft.backbones.heads.probe_head` documents both.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from robustft.backbones import ModelSpec
from robustft.cli.errors import one_line_errors
from robustft.resources import resolve_device
from robustft.schemas.checks import check_config
from robustft.training.probe_fit import fit_head_on_folder


def run(cfg: DictConfig) -> None:
    check_config(cfg)
    spec = ModelSpec.from_mapping(OmegaConf.to_container(cfg.model, resolve=True))
    fitted = fit_head_on_folder(spec.build(), cfg.images, cfg.output, kind=str(cfg.kind),
                                per_class=cfg.per_class, weight_decay=float(cfg.weight_decay),
                                scale=float(cfg.scale), batch_size=int(cfg.batch_size),
                                device=resolve_device(str(cfg.device)))
    print(f"robustft-head: {fitted.kind} head of {len(fitted.classes)} classes on {fitted.images} "
          f"images ({fitted.feature_dim} features), training top-1 "
          f"{100 * fitted.training_top1:.1f} %: {fitted.path}")


@one_line_errors("robustft-head")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="head")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
