"""A generated spurious-background benchmark: the stand-in for ImageNet in robustft's demo.

K classes of simple shapes with class markings (the objects) are pasted, with exact masks,
onto K procedural background textures. In ``pretrain`` (the stand-in's pre-training set,
with a share of plain backdrops so the objects can be learned) and ``train`` (the pool the
fine-tuning masks come from) each class sits on its own background, a shortcut a ViT
trained from scratch takes; the evaluation splits shuffle the background, anti-correlate
it, draw the object as a sketch, or sweep its size / location / rotation (SI-Score
style), so a model that follows the background fails where one that looks at the object
does not. Every image draws from its own seeded generator, so the files are byte-identical
for a config whatever the order or worker count. Why the defaults are what they are (what
the alternatives measured) is in ``docs/demo_measurements.md``.

A second generator (``SynthConfig(objects="glyphs", backgrounds="fields")``, data=synth_b)
draws thick-stroked letters with hatched markings on smooth grey-level fields, and a third
(``objects="pictograms", backgrounds="photos"``, data=synth_c) pictograms from the DejaVu
font without markings on crops of real photographs, through the same rendering and
writing code.

``shapes`` (object masks), ``textures`` (backgrounds, markings, colours), ``glyphs`` and
``fields`` (the second generator's objects and backgrounds), ``pictograms`` and ``photos``
(the third's), ``families`` (which of them a config uses), ``config``
(``SynthConfig``, splits, class names), ``render`` (one image, one split item), ``write``
(``generate_benchmark``, the file layout, ``read_benchmark``), ``read`` (``ImageFolderSplit``,
a split as an evaluation dataset; not imported here, since it needs torch and the
generator does not).
"""

from robustft.synth.config import (
    EVAL_SPLITS,
    GENERIC_SPLITS,
    PLAIN_BACKGROUND,
    SPLITS,
    SWEEP_SPLITS,
    SynthConfig,
    class_names,
)
from robustft.synth.render import render_sample, render_split_item
from robustft.synth.shapes import SHAPE_NAMES, shape_mask
from robustft.synth.textures import background_spec, marking_spec, render_background
from robustft.synth.write import FORMAT_VERSION, generate_benchmark, read_benchmark

__all__ = [
    "EVAL_SPLITS",
    "FORMAT_VERSION",
    "GENERIC_SPLITS",
    "PLAIN_BACKGROUND",
    "SHAPE_NAMES",
    "SPLITS",
    "SWEEP_SPLITS",
    "SynthConfig",
    "background_spec",
    "class_names",
    "generate_benchmark",
    "marking_spec",
    "read_benchmark",
    "render_background",
    "render_sample",
    "render_split_item",
    "shape_mask",
]
