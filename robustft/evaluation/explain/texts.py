"""Explain images against free text prompts with an image-text model (``robustft-explain
... texts='[a red hat,a dog]'``): per image and model, one overlay per prompt and the
prompt's tokens coloured by their relevance (:mod:`robustft.relevance.image_text`).

Written to ``out_dir``:

- ``<image>.png``: per model two rows: the image as the model sees it, then one overlay
  per prompt titled with the prompt, its similarity logit and its probability: the
  softmax over the given prompts (``p``), or for a SigLIP model (a logit bias: each pair
  scored on its own) the pair's ``sigmoid``; under each overlay, the prompt's tokens on a background
  coloured by their relevance (each prompt scaled to its own maximum);
- ``maps/<image>/<model>__texts.npy``: float32 (T, h, w), the raw image map of each prompt
  over the patch grid, in the order of ``texts=``;
- ``texts.csv``: one row per (image, model, prompt): position, text, logit, probability, npy;
- ``tokens.csv``: one row per token: image, model, text position, text, token position
  (within the prompt's words), token, relevance (raw);
- ``index.md``: the settings, then per image its PNG and a table of its prompts.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from robustft.backbones.image_text import ImageTextModel, check_texts
from robustft.data.image_files import load_rgb
from robustft.evaluation.explain.inputs import ImageSet
from robustft.evaluation.explain.overlay_grid import (
    COLORMAP,
    add_legend,
    denormalize,
    draw_grid,
    heat_overlay,
    percent,
)
from robustft.evaluation.runner import model_eval_transform
from robustft.relevance import upsample_and_normalize
from robustft.relevance.image_text import DEFAULT_START_LAYER, image_text_relevance

__all__ = ["TextsResult", "explain_texts", "token_strip"]

TEXTS_CSV = "texts.csv"
TOKENS_CSV = "tokens.csv"
INDEX_NAME = "index.md"
MIN_CELL_WIDTH = 160  # pixels, as robustft-explain's class grids
STRIP_LINE = 14  # pixels per line of the token strip


@dataclass
class TextsResult:
    out_dir: Path
    index: Path
    pngs: list[Path] = field(default_factory=list)
    texts: list[dict] = field(default_factory=list)  # the rows of texts.csv
    tokens: list[dict] = field(default_factory=list)  # the rows of tokens.csv


def token_strip(words: Sequence[str], relevance: Sequence[float], width: int) -> np.ndarray:
    """The tokens as an (H, ``width``, 3) uint8 picture, each on a background of
    ``COLORMAP`` at its relevance over the prompt's maximum (wrapped to ``width``)."""
    from matplotlib import colormaps

    values = np.asarray(relevance, dtype=np.float64)
    top = values.max() if values.size and values.max() > 0 else 1.0
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    places, x, y = [], 1, 1
    for word in words:
        size = int(math.ceil(measure.textlength(word, font=font))) + 4
        if x > 1 and x + size > width:
            x, y = 1, y + STRIP_LINE
        places.append((x, y, size))
        x += size + 2
    strip = Image.new("RGB", (width, y + STRIP_LINE + 1), "white")
    draw = ImageDraw.Draw(strip)
    for word, value, (left, line, size) in zip(words, values, places):
        red, green, blue = (int(255 * c) for c in colormaps[COLORMAP](max(value, 0) / top)[:3])
        draw.rectangle((left, line, left + size, line + STRIP_LINE - 2), fill=(red, green, blue))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 128
        draw.text((left + 2, line), word, fill="white" if dark else "black", font=font)
    return np.asarray(strip)


def _with_token_strips(grid: Image.Image, cell_width: int, scale: int,
                       words: Sequence[Sequence[str]], relevances: Sequence[Sequence[float]]
                       ) -> Image.Image:
    """``grid`` (one row: the picture, then one overlay per prompt, as :func:`draw_grid`
    lays it out with ``scale``) with each prompt's token strip under its overlay."""
    spacing = 2 * scale  # draw_grid's default gap, enlarged as its cells are
    strips = [token_strip(w, r, cell_width) for w, r in zip(words, relevances)]
    height = max(strip.shape[0] for strip in strips)
    canvas = Image.new("RGB", (grid.width, grid.height + spacing + height), "white")
    canvas.paste(grid, (0, 0))
    for column, strip in enumerate(strips, start=1):
        canvas.paste(Image.fromarray(strip), (column * (cell_width + spacing),
                                              grid.height + spacing))
    return canvas


def _stack(blocks: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    """The models' blocks one under the other."""
    canvas = Image.new("RGB", (max(b.width for b in blocks),
                               sum(b.height for b in blocks) + gap * (len(blocks) - 1)), "white")
    top = 0
    for block in blocks:
        canvas.paste(block, (0, top))
        top += block.height + gap
    return canvas


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def explain_texts(models: Mapping[str, ImageTextModel], images: ImageSet, texts: Sequence[str],
                  out_dir: str | Path, *, start_layer: int = DEFAULT_START_LAYER,
                  text_start_layer: int = DEFAULT_START_LAYER, device: str | torch.device = "cpu",
                  scale: int | None = None, max_image_pixels: int | None = None,
                  progress: bool = True, describe_models: Mapping[str, str] | None = None
                  ) -> TextsResult:
    """Explain every image of ``images`` against ``texts`` with every model (label ->
    image-text model); writes the files of the module docstring to ``out_dir``."""
    texts = check_texts(texts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    views = {}
    for label, model in models.items():
        config = model.image.preprocessing()
        views[label] = (model.eval().to(device), model_eval_transform(config),
                        tuple(config["mean"]), tuple(config["std"]))
    result = TextsResult(out_dir, out_dir / INDEX_NAME)
    sigmoid_models: set[str] = set()
    for image in tqdm(images.images, desc="robustft-explain", unit="image", disable=not progress):
        picture_rgb = load_rgb(image.path, max_pixels=max_image_pixels,
                               limit_key="max_image_pixels")
        blocks = []
        for label, (model, transform, mean, std) in views.items():
            inputs = transform(picture_rgb)[None].to(device)
            out = image_text_relevance(model, inputs, texts, start_layer=start_layer,
                                       text_start_layer=text_start_layer)
            raw = out.image[0].detach().float().cpu()
            npy = Path("maps") / image.name / f"{_safe(label)}__texts.npy"
            (out_dir / npy).parent.mkdir(parents=True, exist_ok=True)
            np.save(out_dir / npy, raw.numpy().astype(np.float32))
            shown = upsample_and_normalize(raw, tuple(inputs.shape[-2:]))
            picture = denormalize(inputs[0], mean, std)
            logits, probabilities = out.logits[0].detach(), out.probabilities()[0].detach()
            row = [picture, *(heat_overlay(picture, shown[t]) for t in range(len(texts)))]
            # a SigLIP model scores each pair on its own: its sigmoid, not a softmax
            kind = "sigmoid" if out.sigmoid else "p"
            titles = [f"{label}\nimage", *(f"{text}\nlogit {float(logits[t]):.2f} "
                                           f"{kind} {percent(float(probabilities[t]))}"
                                           for t, text in enumerate(texts))]
            sigmoid_models.update([label] if out.sigmoid else [])
            grow = scale or max(1, math.ceil(MIN_CELL_WIDTH / picture.shape[1]))
            grid = draw_grid([row], cell_titles=[titles], scale=grow)
            relevances = [out.text[t][0].detach().float().cpu().tolist()
                          for t in range(len(texts))]
            blocks.append(_with_token_strips(grid, picture.shape[1] * grow, grow,
                                             out.tokens.words, relevances))
            for t, text in enumerate(texts):
                result.texts.append({"image": image.name, "image_path": str(image.path),
                                     "model": label, "position": t, "text": text,
                                     "logit": float(logits[t]),
                                     "probability": float(probabilities[t]), "npy": npy.as_posix()})
                result.tokens += [{"image": image.name, "model": label, "text_position": t,
                                   "text": text, "token_position": i, "token": word,
                                   "relevance": value}
                                  for i, (word, value) in enumerate(zip(out.tokens.words[t],
                                                                        relevances[t]))]
        png = out_dir / f"{image.name}.png"
        legend = [f"explained: each prompt's similarity logit (texts={texts}); image blocks from "
                  f"image_start_layer={start_layer}, text blocks from text_start_layer="
                  f"{text_start_layer}", "colour: relevance for that prompt, each map scaled to "
                  "its own min-max, each prompt's tokens to their maximum"]
        legend.append(_probability_note(sigmoid_models))
        add_legend(_stack(blocks), legend).save(png)
        result.pngs.append(png)
    _write_csv(out_dir / TEXTS_CSV, result.texts)
    _write_csv(out_dir / TOKENS_CSV, result.tokens)
    _write_index(result, images, texts, start_layer, text_start_layer,
                 describe_models or {label: type(m.model).__name__ for label, m in models.items()},
                 _probability_note(sigmoid_models))
    return result


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _probability_note(sigmoid_models: set[str]) -> str:
    """What the probability shown is, per model."""
    note = "p: each image's softmax over the given prompts"
    if sigmoid_models:
        note += (f"; sigmoid ({', '.join(sorted(sigmoid_models))}): each pair's own "
                 "sigmoid(logit), as a SigLIP model scores a pair (not a softmax over the prompts)")
    return note


def _write_index(result: TextsResult, images: ImageSet, texts: Sequence[str], start_layer: int,
                 text_start_layer: int, describe_models: Mapping[str, str],
                 probability_note: str) -> None:
    lines = ["# robustft-explain (texts)", "",
             f"{len(images.images)} image(s); prompts {list(texts)}; image rollout from block "
             f"{start_layer}, text rollout from block {text_start_layer}.", "",
             f"Probability: {probability_note}.", "",
             "| model | built from |", "|---|---|"]
    lines += [f"| {label} | {text} |" for label, text in describe_models.items()]
    lines += ["", "Maps: `maps/<image>/<model>__texts.npy`, float32 (T, h, w): the raw image "
              "relevance of each prompt, in the order of `texts`; token relevance in "
              f"`{TOKENS_CSV}`.", ""]
    for image, png in zip(images.images, result.pngs):
        lines += [f"## {image.name}", "", f"`{image.path}`", "", f"![{image.name}]({png.name})",
                  "", "| model | prompt | logit | probability | map [T] |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['text']} | {r['logit']:.3f} | "
                  f"{percent(r['probability'])} | [{r['npy']}]({r['npy']}) [{r['position']}] |"
                  for r in result.texts if r["image"] == image.name]
        lines.append("")
    result.index.write_text("\n".join(lines))
