"""Foundation-model records: local weights load by name and give timm's embeddings; transformers
ViT keys map onto timm's; bad files fail in one line; big records check out on the meta device."""

from __future__ import annotations

import hashlib

import pytest
import torch

from breastpath.errors import CheckpointError
from breastpath.models import create_model
from breastpath.models.foundation import FOUNDATION_RECORDS, FoundationBackbone, get_record
from breastpath.models.hf_keys import convert_hf_vit, timm_to_hf_vit


@pytest.fixture(scope="module")
def vits16():
    """timm's ViT-S/16 with seeded random weights: the stand-in for kaiko_vits16's weights."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True
    )
    with torch.no_grad():  # timm zero-inits some biases: make every tensor matter
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net.eval()


@pytest.fixture(scope="module")
def batch():
    return torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_kaiko_vits16_from_a_safetensors_file_equals_timm(vits16, batch, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vits16.safetensors"
    save_file({k: v.contiguous() for k, v in vits16.state_dict().items()}, str(path))
    model = create_model("kaiko_vits16", num_classes=0, weights=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), vits16(batch), atol=1e-4, rtol=1e-4)
    assert model.init_info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.init_info["tensors"] == len(vits16.state_dict())


def test_a_torch_state_dict_loads_too_and_a_head_can_be_added(vits16, batch, tmp_path):
    path = tmp_path / "vits16.pth"
    torch.save({"state_dict": vits16.state_dict()}, path)
    model = create_model("kaiko_vits16", num_classes=2, weights=path).eval()
    with torch.no_grad():
        embedding = model.forward_embedding(batch)
        torch.testing.assert_close(embedding, vits16(batch), atol=1e-4, rtol=1e-4)
        assert model(batch).shape == (3, 2)


def test_transformers_vit_keys_map_onto_timm(vits16, batch, tmp_path):
    from safetensors.torch import save_file

    hf = {f"vit.{k}": v for k, v in timm_to_hf_vit(vits16.state_dict()).items()}
    hf["vit.pooler.dense.weight"] = torch.zeros(384, 384)  # transformers ViTModel extras
    hf["vit.embeddings.mask_token"] = torch.zeros(1, 1, 384)
    assert "vit.encoder.layer.3.attention.attention.query.weight" in hf
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.items()}, str(path))
    model = create_model("kaiko_vits16", num_classes=0, weights=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), vits16(batch), atol=1e-4, rtol=1e-4)


def test_transformers_position_embeddings_of_another_grid_are_resampled(vits16):
    hf = timm_to_hf_vit(vits16.state_dict())
    hf["embeddings.position_embeddings"] = torch.zeros(1, 1 + 37 * 37, 384)  # 518 px / 14
    converted = convert_hf_vit(hf, vits16.state_dict())
    assert converted["pos_embed"].shape == (1, 197, 384)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.pop("blocks.0.attn.qkv.weight"), "unset|do not fit"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected tensor"),
        (lambda s: s.update({"norm.weight": torch.zeros(5)}), "cannot load"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_weights_that_do_not_fit_are_one_line_checkpoint_errors(vits16, tmp_path, change, words):
    import re

    state = dict(vits16.state_dict())
    change(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        create_model("kaiko_vits16", num_classes=0, weights=path)
    assert "\n" not in str(info.value)
    assert re.search(words, str(info.value))


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # an nn.Module: needs unpickling code
    with pytest.raises(CheckpointError, match=r"unreadable|not a state dict"):
        create_model("kaiko_vits16", num_classes=0, weights=path)


def test_pretrained_without_a_file_says_where_weights_come_from():
    with pytest.raises(CheckpointError, match=r"weights=PATH|no offline"):
        create_model("mahmood_uni", num_classes=0, pretrained=True)


BIG = ["mahmood_uni", "mahmood_uni2_h", "paige_virchow2", "bioptimus_h_optimus_0",
       "prov_gigapath", "owkin_phikon", "owkin_phikon_v2", "kaiko_vitb16"]  # fmt: skip


@pytest.mark.parametrize("name", BIG)
def test_big_records_build_on_the_meta_device(name):
    record = get_record(name)
    with torch.device("meta"):
        model = FoundationBackbone(name, num_classes=0)
        out = model(torch.zeros(2, 3, 50, 50))
    params = sum(p.numel() for p in model.backbone.parameters())
    assert abs(params - record.params) / record.params < 0.01, params
    assert out.shape == (2, record.embed_dim)
    keys = model.backbone.state_dict()
    assert keys["pos_embed"].shape[-1] == record.width
    assert ("blocks.0.ls1.gamma" in keys) == ("init_values" in record.arch_args)
    assert record.key_layout in ("timm", "hf_vit", "hf_dinov2")


def test_record_layouts_match_the_published_configs():
    with torch.device("meta"):
        uni2 = FoundationBackbone("mahmood_uni2_h").backbone
        virchow = FoundationBackbone("paige_virchow2").backbone
    assert uni2.num_prefix_tokens == 1 + 8 and uni2.pos_embed.shape == (1, 256, 1536)
    assert virchow.num_prefix_tokens == 1 + 4 and virchow.pos_embed.shape == (1, 261, 1280)
    mlp = virchow.blocks[0].mlp  # SwiGLUPacked: fc1 packs gate and value, fc2 takes half
    assert mlp.fc1.weight.shape == (6832, 1280) and mlp.fc2.weight.shape == (1280, 3416)
    assert get_record("paige_virchow2").embed_dim == 2560
    assert get_record("owkin_phikon").key_layout == "hf_vit"
    unverified = [r.name for r in FOUNDATION_RECORDS.values() if not r.verified]
    assert all(FOUNDATION_RECORDS[n].unverified for n in unverified)
