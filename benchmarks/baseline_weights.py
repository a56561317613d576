"""Where ``experiment=demo``'s baseline weights (``loss.lambda_rrr``, ``loss.lambda_gradmask``)
come from: on the first fine-tuning batch of each draw, the norm of the gradient on the
weights of each term at the start (the stand-in as it is), and the weight that makes each
baseline's penalty push as hard as the relevance loss (the ratio of the two norms; the
geometric mean over the draws is what the experiment uses).

Run ``robustft-demo`` once first (benchmark and cached stand-in), then from the repository
root, with any override of the demo's config::

    python benchmarks/baseline_weights.py
    python benchmarks/baseline_weights.py --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from robustft.backbones import backbone_of
from robustft.baselines import background_weight, gradmask_penalty, rrr_penalty
from robustft.data.datamodule import pairs_and_unmasked
from robustft.training.run import build_datamodule, build_finetuner, build_model

_LOOP = Path(__file__).with_name("demo_library_loop.py")


def _demo_config(overrides: list[str]):
    spec = importlib.util.spec_from_file_location("demo_library_loop", _LOOP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.demo_config(overrides)


def _norm(value: torch.Tensor, parameters: list[torch.Tensor]) -> float:
    gradients = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.pow(2).sum()) for g in gradients if g is not None))


def measure(overrides: list[str]) -> dict[str, float]:
    """Each term's value and weight-gradient norm on the draw's first training batch."""
    cfg = _demo_config(overrides)
    weights = Path(cfg.model.weights_file)
    if not weights.is_file():
        raise FileNotFoundError(f"model.weights_file: {weights} is missing; run robustft-demo "
                                "once first (it caches the stand-in)")
    model = build_model(cfg.model)
    datamodule = build_datamodule(cfg.data, model)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    # with images without masks: a CombinedLoader yielding ({"pairs", "unmasked"}, i, j); the
    # penalties are the pairs', the demo's loss takes the whole step's batch
    step_batch = next(iter(loader))
    batch, _unmasked = pairs_and_unmasked(step_batch)
    parameters = [p for p in model.parameters() if p.requires_grad]
    backbone = backbone_of(model)
    images = batch["image"].clone().requires_grad_(True)
    with backbone.capture_attention():
        logits = backbone.class_scores(images)
    background = background_weight(batch["mask"], batch["ignore"])
    terms = {"ce": F.cross_entropy(logits, batch["label"]),
             "rrr": rrr_penalty(logits, images, background),
             "gradmask": gradmask_penalty(logits, batch["label"], images, background)}
    module = build_finetuner(cfg, model)
    module.log_dict = lambda *args, **kwargs: None
    # the demo's training loss; its L2-SP term and gradient are 0 at the start
    terms["relevance"] = module.training_step(step_batch, 0)
    result = {}
    for name, value in terms.items():
        result[name] = float(value)
        result[f"{name}_grad"] = _norm(value, parameters)
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="data.seed of each draw, comma-separated")
    parser.add_argument("overrides", nargs="*", help="overrides of the demo's config")
    args = parser.parse_args(argv)
    ratios: dict[str, list[float]] = {"rrr": [], "gradmask": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        values = measure([*args.overrides, f"data.seed={seed}"])
        print(f"data.seed={seed}: " + ", ".join(
            f"{name} {values[name]:.4g} (grad {values[name + '_grad']:.3g})"
            for name in ("ce", "relevance", "rrr", "gradmask")))
        for name in ratios:
            ratios[name].append(values["relevance_grad"] / max(values[f"{name}_grad"], 1e-30))
    weights = {name: math.exp(sum(math.log(r) for r in rs) / len(rs)) for name, rs in ratios.items()}
    print(f"weight matching the relevance loss's push (geometric mean over the draws): "
          f"lambda_rrr {weights['rrr']:.3g}, lambda_gradmask {weights['gradmask']:.3g}")
    return weights


if __name__ == "__main__":
    main()
