"""``robustft-masks``: TokenCut masks for a dataset folder (Hydra entry point).

    robustft-masks input_dir=/data/pets output_dir=/data/pets
    robustft-masks input_dir=/data/imagenet/train output_dir=/data/in_masks refine=true \
        model.name=vit_base_patch16_224.dino model.weights_file=/weights/dino_vitb16.pth
    # a DINOv2, and the IoU of each mask with true masks in the generic layout
    robustft-masks input_dir=/data/pets output_dir=/tmp/m compare_to=/data/pets_true \
        model.name=vit_small_patch14_dinov2 model.weights_file=/w/dinov2_s14.safetensors \
        ++model.kwargs.img_size=224

Config: ``configs/masks.yaml``; the run: :func:`robustft.masks.run.run_masks`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from robustft.cli.errors import one_line_errors
from robustft.masks.run import check_required, run_masks
from robustft.schemas.checks import check_config


@one_line_errors("robustft-masks")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="masks")
def main(cfg: DictConfig) -> None:
    check_required(cfg)
    check_config(cfg)
    run_masks(cfg)


if __name__ == "__main__":
    main()
