"""Drawing relevance overlays: an input tensor back to pixels, a [0, 1] map blended over
them as a heat map, and a titled grid of such pictures as one PNG. Shared by the demo's
overlay grid (:func:`robustft.demo.relevance_stats.relevance_overlay_grid`),
``robustft-explain`` and the training-time overlay callback."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["add_legend", "colorbar_box", "denormalize", "draw_grid", "heat_overlay", "legend_height",
           "mask_picture", "percent"]

HEADER_HEIGHT = 14  # the band of column titles above the grid
LINE_HEIGHT = 12  # one line of a cell title (PIL's default font)
COLORMAP = "jet"  # of every relevance overlay: blue = least relevant, red = most
LEGEND_GAP = 4  # white pixels between the grid and its legend
LEGEND_MARGIN = 2  # left and right of the legend's text and colour bar
COLORBAR_HEIGHT = 10
COLORBAR_MAX_WIDTH = 256
COLORBAR_ENDS = ("0 = least relevant", "most relevant = 1")


def denormalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised (3, H, W) input as the (H, W, 3) uint8 picture the model saw."""
    image = image.detach().float().cpu()
    pixels = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def mask_picture(mask: Tensor | np.ndarray) -> np.ndarray:
    """A (H, W) mask in [0, 1] as a grey (H, W, 3) uint8 picture (foreground white)."""
    values = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    return np.repeat((values * 255).astype(np.uint8)[..., None], 3, axis=2)


def heat_overlay(picture: np.ndarray, relevance: Tensor | np.ndarray, *,
                 alpha: float = 0.5, colormap: str = COLORMAP) -> np.ndarray:
    """``relevance`` (H, W) in [0, 1], coloured with ``colormap`` and blended over
    ``picture`` (H, W, 3) uint8 with weight ``alpha``."""
    from matplotlib import colormaps

    values = relevance.detach().cpu().numpy() if isinstance(relevance, Tensor) else relevance
    if values.shape != picture.shape[:2]:
        raise ValueError(f"relevance map {values.shape} and picture {picture.shape[:2]} differ "
                         "in size; upsample the map to the picture first")
    heat = (colormaps[colormap](values)[..., :3] * 255).astype(np.uint8)
    return ((1 - alpha) * picture + alpha * heat).astype(np.uint8)


def percent(probability: float) -> str:
    """A probability for a title: ``87.3%``, and two significant digits below 1 %
    (``0.0042%``), where a named class of another image often is."""
    return f"{probability:.1%}" if probability >= 0.01 else f"{100 * probability:.2g}%"


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont) -> str:
    """``text`` cut (with "...") to at most ``width`` pixels in ``font``."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def draw_grid(rows: Sequence[Sequence[np.ndarray]], *, column_titles: Sequence[str] = (),
              cell_titles: Sequence[Sequence[str]] | None = None, scale: int = 1,
              gap: int = 2) -> Image.Image:
    """The pictures ``rows[r][c]`` ((H, W, 3) uint8, sizes may differ: each is padded with
    white to the largest) as one image, enlarged ``scale`` times (nearest neighbour), ``gap``
    white pixels between cells (times ``scale``). ``column_titles`` go in one band above
    the grid; ``cell_titles[r][c]`` (lines split at "\\n", each cut to the cell's width) in a
    band above row ``r``."""
    if not rows or not any(rows):
        raise ValueError("draw_grid needs at least one picture")
    pictures = [[np.kron(cell, np.ones((scale, scale, 1), np.uint8)) for cell in row] for row in rows]
    cell_height = max(cell.shape[0] for row in pictures for cell in row)
    cell_width = max(cell.shape[1] for row in pictures for cell in row)
    columns = max(len(row) for row in pictures)
    spacing = gap * scale
    header = HEADER_HEIGHT if column_titles else 0
    bands = [0] * len(rows)
    if cell_titles is not None:
        bands = [max((title.count("\n") + 1 for title in titles if title), default=0)
                 * LINE_HEIGHT + (2 if any(titles) else 0) for titles in cell_titles]
    width = columns * cell_width + (columns - 1) * spacing
    height = header + sum(bands) + len(rows) * cell_height + (len(rows) - 1) * spacing
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for column, title in enumerate(column_titles):
        left = column * (cell_width + spacing)
        draw.text((left + 2, 1), _fit(draw, str(title), cell_width - 2, font), fill="black", font=font)
    top = header
    for r, row in enumerate(pictures):
        for c, cell in enumerate(row):
            left = c * (cell_width + spacing)
            if cell_titles is not None and c < len(cell_titles[r]) and cell_titles[r][c]:
                for line_number, line in enumerate(cell_titles[r][c].split("\n")):
                    draw.text((left + 1, top + line_number * LINE_HEIGHT),
                              _fit(draw, line, cell_width - 2, font), fill="black", font=font)
            canvas.paste(Image.fromarray(cell), (left, top + bands[r]))
        top += bands[r] + cell_height + spacing
    return canvas


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (a single word
    longer than that is cut with "...")."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(_fit(draw, word, width, font))
    return lines


def _legend_lines(lines: Sequence[str], width: int) -> list[str]:
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = ImageFont.load_default()
    return [part for line in lines for part in _wrap(draw, line, width - 2 * LEGEND_MARGIN, font)]


def legend_height(lines: Sequence[str], width: int) -> int:
    """The height :func:`add_legend` adds below a grid ``width`` pixels wide."""
    return (LEGEND_GAP + len(_legend_lines(lines, width)) * LINE_HEIGHT + COLORBAR_HEIGHT
            + LINE_HEIGHT)


def colorbar_box(grid_size: tuple[int, int], lines: Sequence[str]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the colour bar :func:`add_legend` draws below a grid of
    ``grid_size`` (width, height)."""
    width, height = grid_size
    top = height + LEGEND_GAP + len(_legend_lines(lines, width)) * LINE_HEIGHT
    bar_width = min(COLORBAR_MAX_WIDTH, width - 2 * LEGEND_MARGIN)
    return LEGEND_MARGIN, top, LEGEND_MARGIN + bar_width, top + COLORBAR_HEIGHT


def add_legend(grid: Image.Image, lines: Sequence[str], *, colormap: str = COLORMAP) -> Image.Image:
    """``grid`` with a legend below it: ``lines`` of text (what was explained, what the
    colours are; wrapped to the grid's width), then a colour bar of ``colormap`` from 0
    (least relevant) to 1 (most relevant), the scale of every normalised overlay."""
    from matplotlib import colormaps

    text = _legend_lines(lines, grid.width)
    canvas = Image.new("RGB", (grid.width, grid.height + legend_height(lines, grid.width)), "white")
    canvas.paste(grid, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    top = grid.height + LEGEND_GAP
    for number, line in enumerate(text):
        draw.text((LEGEND_MARGIN, top + number * LINE_HEIGHT), line, fill="black", font=font)
    left, bar_top, right, bar_bottom = colorbar_box(grid.size, lines)
    ramp = colormaps[colormap](np.linspace(0.0, 1.0, right - left))[:, :3]
    bar = np.repeat((ramp * 255).astype(np.uint8)[None], COLORBAR_HEIGHT, axis=0)
    canvas.paste(Image.fromarray(bar), (left, bar_top))
    low, high = (_fit(draw, end, (right - left) // 2 - 2, font) for end in COLORBAR_ENDS)
    draw.text((left, bar_bottom), low, fill="black", font=font)
    draw.text((right - draw.textlength(high, font=font), bar_bottom), high, fill="black", font=font)
    return canvas
