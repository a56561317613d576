"""Benchmark: one relevance training step with captions (the caption head,
``data.captions``) against the zero-shot head of class prompts, on the same OpenCLIP model.

    python benchmarks/caption_step.py --batch 8 --rounds 7

Both steps share the image tower (random weights, the demo's OpenCLIP shape by default:
64 px, 8-px patches, 4 blocks of width 128; a 2-block text tower of width 64) and run the
same step: the relevance map of each image's label (grad_rollout, detached, eager), the
loss of ``robustft.losses.relevance_loss`` with ``label_ce`` and its backward (gradients
zeroed, no optimiser update). The zero-shot head scores ``--batch`` class prompts
(``a photo of a class k.``, embedded once, before timing); the caption step also encodes the
batch's distinct captions with the frozen text tower every step (``--distinct`` of them), as
training does. Rounds interleave the two; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import open_clip
import torch

from robustft.backbones.heads.captions import CaptionClassifier
from robustft.backbones.open_clip.load import zero_shot_classifier
from robustft.backbones.open_clip.text import OpenClipImageText
from robustft.losses import relevance_loss
from robustft.relevance import upsample_and_normalize
from robustft.relevance.grad_rollout import relevance_map

DEMO_SHAPE = {"embed_dim": 128,
              "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4,
                             "head_width": 32},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                           "layers": 2}}


def _step(model, images, masks, labels, set_captions=None) -> float:
    start = time.perf_counter()
    if set_captions is not None:
        labels = set_captions()
    out = relevance_map(model, images, labels, "detached", backend="eager")
    maps = upsample_and_normalize(out.relevance, masks.shape[-2:])
    loss = relevance_loss(maps, masks, out.logits, classification="label_ce", labels=labels)
    loss.total.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--distinct", type=int, default=None,
                        help="distinct captions per batch (default: one per image)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kwargs", type=json.loads, default=DEMO_SHAPE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **args.kwargs).train()
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=clip.context_length)
    captions_model = CaptionClassifier(OpenClipImageText(clip, tokenizer))
    names = [f"class {k}" for k in range(args.batch)]
    zero_shot = zero_shot_classifier(clip, names, ["a photo of a {}."],  # shares clip.visual
                                     tokenizer=tokenizer)
    size = clip.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(args.batch, 3, size, size)
    masks = (torch.rand(args.batch, size, size) > 0.5).float()
    labels = torch.arange(args.batch)
    distinct = args.distinct or args.batch
    captions = [f"a photo of a class {k % distinct}, seen from the side" for k in range(args.batch)]
    times: dict[str, list[float]] = {"zero_shot": [], "captions": []}
    _step(zero_shot, images, masks, labels)  # warm-up
    _step(captions_model, images, masks, labels, lambda: captions_model.set_captions(captions))
    for _ in range(args.rounds):
        times["zero_shot"].append(_step(zero_shot, images, masks, labels))
        times["captions"].append(_step(captions_model, images, masks, labels,
                                       lambda: captions_model.set_captions(captions)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:10s} median {medians[name] * 1000:8.1f} ms  "
              f"(rounds: {', '.join(f'{v * 1000:.1f}' for v in values)})")
    print(f"captions / zero_shot step time: {medians['captions'] / medians['zero_shot']:.3f} "
          f"(batch {args.batch}, {distinct} distinct captions, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
