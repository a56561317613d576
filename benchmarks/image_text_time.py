"""Time per (image, text) pair of :func:`robustft.relevance.image_text.image_text_relevance`
on a ViT-B/16-shaped OpenCLIP model with random weights (OpenCLIP's ``ViT-B-16`` config: a
12-block 768-wide image tower at 224 px, a 12-block 512-wide text tower over 77 tokens),
against the same pairs one call each and against a plain forward of both towers. The three
are interleaved, repeat by repeat, so that load on a shared machine hits them alike::

    python benchmarks/image_text_time.py --images 2 --texts 4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch

from robustft.backbones.open_clip.text import OpenClipImageText
from robustft.relevance.image_text import image_text_relevance

PROMPTS = ["a photo of a dog", "a red hat", "a cat on a sofa", "a tree in the snow",
           "a bicycle", "a plate of food", "two people talking", "a blue car"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--texts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    model = OpenClipImageText(clip, open_clip.get_tokenizer("ViT-B-16"))
    images = torch.randn(args.images, 3, 224, 224)
    texts = PROMPTS[:args.texts]
    pairs = args.images * args.texts

    def batched() -> None:
        image_text_relevance(model, images, texts)

    def per_pair() -> None:
        for b in range(args.images):
            for text in texts:
                image_text_relevance(model, images[b:b + 1], [text])

    def forward() -> None:
        with torch.no_grad():
            clip.get_logits(images, model.tokenize(texts).ids)

    runs = {"batched relevance": batched, "one call per pair": per_pair,
            "forward only": forward}
    batched()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    print(f"{args.images} images x {args.texts} texts = {pairs} pairs, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")
    base = statistics.median(times["batched relevance"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>20}: {median / pairs * 1000:8.1f} ms per pair (median call {median:.2f} s, "
              f"{median / base:.2f}x the batched call)")


if __name__ == "__main__":
    main()
