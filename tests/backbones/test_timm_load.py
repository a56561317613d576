"""Model creation: local weight files through timm's loader, clear errors offline."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from robustft.backbones.timm import create_model, token_layout

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


def test_weights_file_round_trip(tmp_path):
    source = create_model("vit_tiny_patch16_224", num_classes=3, **TINY)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_model("vit_tiny_patch16_224", num_classes=3, weights_file=path, **TINY)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="model.weights_file"):
        create_model("vit_tiny_patch16_224", weights_file=tmp_path / "missing.safetensors")


def test_offline_pretrained_points_to_weights_file():
    # conftest sets HF_HUB_OFFLINE=1, so the hub download fails at once
    with pytest.raises(OSError, match="model.weights_file"):
        create_model("vit_tiny_patch16_224", pretrained=True, **TINY)


def test_token_layout_of_registers_model():
    model = create_model("vit_tiny_patch16_224", reg_tokens=2, **{**TINY, "img_size": (32, 24)})
    layout = token_layout(model, (32, 24))
    assert (layout.num_prefix_tokens, layout.grid_size, layout.num_tokens) == (3, (4, 3), 15)


def _save_weights(model, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_weights_file_is_one_line_naming_key_and_file(tmp_path, suffix, keep):
    from fixtures.broken_files import truncate

    path = truncate(_save_weights(create_model("vit_tiny_patch16_224", **TINY),
                                  tmp_path / f"vit{suffix}"), keep)
    with pytest.raises(ValueError, match=rf"^models\.ft\.weights_file: {path} is not a readable "
                                         r"\S+ .*file \(truncated\?\)") as error:
        create_model("vit_tiny_patch16_224", weights_file=path,
                     weights_key="models.ft.weights_file", **TINY)
    assert "\n" not in str(error.value)


def test_truncated_npz_is_one_line(tmp_path):
    import numpy as np
    from fixtures.broken_files import truncate

    path = tmp_path / "vit.npz"
    np.savez(path, weights=np.zeros(1000))
    truncate(path)
    with pytest.raises(ValueError, match=rf"^model\.weights_file: {path} is not a readable numpy "
                                         r"\.npz file \(truncated\?\)"):
        create_model("vit_tiny_patch16_224", weights_file=path, **TINY)


def test_weights_of_another_architecture_name_the_first_tensor_and_the_count(tmp_path):
    wider = create_model("vit_tiny_patch16_224", **{**TINY, "embed_dim": 64, "depth": 2})
    path = _save_weights(wider, tmp_path / "wider.safetensors")
    model = create_model("vit_tiny_patch16_224", **TINY)
    # independent count: every tensor both have whose shape differs, and the extra block
    differ = [k for k, v in model.state_dict().items() if wider.state_dict()[k].shape != v.shape]
    extra = [k for k in wider.state_dict() if k not in model.state_dict()]
    first = differ[0]
    with pytest.raises(ValueError) as error:
        create_model("vit_tiny_patch16_224", weights_file=path, **TINY)
    message = str(error.value)
    assert message.startswith(f"model.weights_file: {path} does not fit "
                              "model.name=vit_tiny_patch16_224")
    assert (f"{len(differ)} tensors differ, e.g. {first}: file "
            f"{tuple(wider.state_dict()[first].shape)} vs model "
            f"{tuple(model.state_dict()[first].shape)}") in message
    named_extra = message.split(f"{len(extra)} tensors of the file not in the model (e.g. ")[1]
    assert named_extra.rstrip(")") in extra
    assert "\n" not in message


def test_model_construction_errors_pass_unchanged(tmp_path):
    path = _save_weights(create_model("vit_tiny_patch16_224", **TINY), tmp_path / "vit.pth")
    with pytest.raises(TypeError, match="not_an_argument"):
        create_model("vit_tiny_patch16_224", weights_file=path, not_an_argument=1, **TINY)


def _to_jax_npz(model, path):
    """The original JAX/Flax ViT checkpoint layout (``Transformer/encoderblock_{i}/...``,
    HWIO convolution, (in, out) dense kernels, per-head q/k/v kernels), written from a timm
    model by inverting each array's layout by hand."""
    import numpy as np

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    arrays = {"embedding/kernel": state["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
              "embedding/bias": state["patch_embed.proj.bias"], "cls": state["cls_token"],
              "Transformer/posembed_input/pos_embedding": state["pos_embed"],
              "Transformer/encoder_norm/scale": state["norm.weight"],
              "Transformer/encoder_norm/bias": state["norm.bias"],
              "head/kernel": state["head.weight"].T, "head/bias": state["head.bias"]}
    for i in range(len(model.blocks)):
        block, prefix = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        attention = prefix + "MultiHeadDotProductAttention_1/"
        qkv_w = state[block + "attn.qkv.weight"].reshape(3, dim, dim)
        qkv_b = state[block + "attn.qkv.bias"].reshape(3, dim)
        for j, name in enumerate(("query", "key", "value")):
            arrays[f"{attention}{name}/kernel"] = qkv_w[j].T.reshape(dim, heads, -1)
            arrays[f"{attention}{name}/bias"] = qkv_b[j].reshape(heads, -1)
        arrays[attention + "out/kernel"] = (state[block + "attn.proj.weight"]
                                            .reshape(dim, heads, -1).transpose(1, 2, 0))
        arrays[attention + "out/bias"] = state[block + "attn.proj.bias"]
        for norm, ln in (("norm1", 0), ("norm2", 2)):
            arrays[f"{prefix}LayerNorm_{ln}/scale"] = state[f"{block}{norm}.weight"]
            arrays[f"{prefix}LayerNorm_{ln}/bias"] = state[f"{block}{norm}.bias"]
        for r in range(2):
            arrays[f"{prefix}MlpBlock_3/Dense_{r}/kernel"] = state[f"{block}mlp.fc{r + 1}.weight"].T
            arrays[f"{prefix}MlpBlock_3/Dense_{r}/bias"] = state[f"{block}mlp.fc{r + 1}.bias"]
    np.savez(path, **arrays)
    return path


def test_jax_npz_weights_file_loads_the_same_model(tmp_path):
    torch.manual_seed(0)
    source = create_model("vit_tiny_patch16_224", num_classes=5, **TINY).eval()
    path = _to_jax_npz(source, tmp_path / "ViT-Ti_16.npz")
    loaded = create_model("vit_tiny_patch16_224", weights_file=path, num_classes=5, **TINY).eval()
    for name, tensor in source.state_dict().items():
        assert torch.allclose(loaded.state_dict()[name], tensor, atol=1e-6), name
    images = torch.randn(2, 3, *source.patch_embed.img_size)
    with torch.no_grad():
        assert torch.allclose(loaded(images), source(images), atol=1e-5)
    # a head of another size would be left random by timm's npz reader, silently
    with pytest.raises(ValueError, match=rf"^model\.weights_file: {path} has a 5-class head "
                                         r"\(head/bias\) but model\.num_classes is 7"):
        create_model("vit_tiny_patch16_224", weights_file=path, num_classes=7, **TINY)
