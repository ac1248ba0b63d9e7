"""DINOv2 ViT-Adapter backbone against the official model's tensors (golden ``vitadapter_offline_tiny``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvis_attn_pl.model.backbone.base import ShapeSpec, build_backbone
from dvis_attn_pl.model.backbone.vit_adapter import ViTAdapter, ViTAdapterSizes, vit_adapter_sizes
from dvis_attn_pl.model.capture import disable_capture, enable_capture, name_capture_sites, select_sites
from dvis_attn_pl.utils.errors import UserError
from tests.golden import TINY_VIT_SIZES, assert_close_ref, golden_case, golden_config

CASE = "vitadapter_offline_tiny"
VITL_SIZES = ViTAdapterSizes(1024, 24, 16, 16, 64, ((0, 5), (6, 11), (12, 17), (18, 23)))


@pytest.fixture(scope="module")
def case():
    return golden_case(CASE)


@pytest.fixture(scope="module")
def backbone(case):
    """The tiny backbone built through the registry, wrapped so capture sites get official paths."""
    model = build_backbone(golden_config(case))
    model.load_state_dict(case.sub_state_dict("backbone."), strict=True)
    wrapper = nn.Module()
    wrapper.backbone = model
    name_capture_sites(wrapper)
    return wrapper.eval()


def _video_input(case, i: int) -> torch.Tensor:
    """Normalised frames zero-padded to a multiple of 32, as the meta-architecture feeds the backbone."""
    frames = case.inputs[f"v{i}.image_mapper_uint8_TCHW"].float()
    mean = torch.tensor(case.cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(case.cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1)
    x = (frames - mean) / std
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % 32, 0, -h % 32))


def _run_with_hooks(model: ViTAdapter, x: torch.Tensor):
    """Outputs plus every ViT block output and every extractor MSDeformAttn output."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(model.vit_module.blocks):
        handles.append(block.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"blocks.{i}", o)))
    for i, inter in enumerate(model.interactions):
        handles.append(
            inter.extractor.attn.register_forward_hook(
                lambda m, a, o, i=i: seen.__setitem__(f"extractor.{i}", o)
            )
        )
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, seen


def test_input_reconstruction_matches_golden(case):
    torch.testing.assert_close(
        _video_input(case, 0), case.intermediates["v0.backbone.win0.input"], rtol=0, atol=0
    )


def test_outputs_and_intermediates_match_official(case, backbone):
    model = backbone.backbone
    ref = case.intermediates
    out, seen = _run_with_hooks(model, ref["v0.backbone.win0.input"])
    assert set(out) == {"res2", "res3", "res4", "res5"}
    for name, tensor in out.items():
        assert_close_ref(tensor, ref[f"v0.backbone.win0.{name}"], f"v0 {name}")
    for i in range(4):
        assert_close_ref(
            seen[f"blocks.{i}"], ref[f"v0.backbone.vit_module.blocks.{i}.win0.out"], f"block {i}"
        )
        assert_close_ref(
            seen[f"extractor.{i}"],
            ref[f"v0.backbone.interactions.{i}.extractor.attn.win0.out"],
            f"extractor {i}",
        )


def test_second_video_matches_official(case, backbone):
    with torch.no_grad():
        out = backbone.backbone(_video_input(case, 1))
    for name, tensor in out.items():
        assert_close_ref(tensor, case.intermediates[f"v1.backbone.win0.{name}"], f"v1 {name}")


def test_captured_vit_attention_matches_recomputed_probs(case, backbone):
    ref = case.intermediates
    x = ref["v0.backbone.win0.input"]
    with torch.no_grad():
        plain = backbone.backbone(x)
    sites = select_sites(backbone, kinds=["backbone_self"])
    assert [s.site_name for s in sites] == [f"backbone.vit_module.blocks.{i}.attn" for i in range(4)]
    got: dict[str, torch.Tensor] = {}
    enable_capture(
        sites, lambda site, tensors: got.__setitem__(site.site_name, tensors["weights"]), per_head=True
    )
    try:
        with torch.no_grad():
            captured = backbone.backbone(x)
    finally:
        disable_capture(backbone)
    for i in range(4):
        name = f"backbone.vit_module.blocks.{i}.attn"
        probs = ref[f"v0.{name}.win0.attn_probs_recomputed"]
        assert got[name].shape == probs.shape == (7, 4, 61, 61)
        torch.testing.assert_close(got[name], probs, rtol=0, atol=1e-5)
    # capture changes the attention path (explicit softmax instead of SDPA), not the result
    for name in plain:
        torch.testing.assert_close(captured[name], plain[name], rtol=1e-5, atol=1e-5)
    assert all(site.capture is None for site in sites)


def test_head_averaged_capture_and_deform_sites(case, backbone):
    x = case.intermediates["v0.backbone.win0.input"][:1]
    got: dict[str, dict[str, torch.Tensor]] = {}
    sites = select_sites(
        backbone, patterns=["backbone.vit_module.blocks.0.attn", "backbone.interactions.3.*"]
    )
    assert {s.site_kind for s in sites} == {"backbone_self", "deform_sampling"}
    enable_capture(sites, lambda site, tensors: got.__setitem__(site.site_name, tensors))
    try:
        with torch.no_grad():
            backbone.backbone(x)
    finally:
        disable_capture(backbone)
    weights = got["backbone.vit_module.blocks.0.attn"]["weights"]
    assert weights.shape == (1, 61, 61)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 61))
    extra = {f"backbone.interactions.3.extra_extractors.{j}.attn" for j in (0, 1)}
    assert extra | {"backbone.interactions.3.extractor.attn"} <= set(got)
    # 315 prior tokens (strides 8/16/32 of 96x160), 4 heads, 1 level, 4 points
    assert got["backbone.interactions.3.extractor.attn"]["attention_weights"].shape == (1, 315, 4, 1, 4)


def test_output_shape_and_registry(case, backbone):
    model = backbone.backbone
    assert isinstance(model, ViTAdapter)
    assert model.output_shape() == {
        "res2": ShapeSpec(channels=64, stride=4),
        "res3": ShapeSpec(channels=64, stride=8),
        "res4": ShapeSpec(channels=64, stride=16),
        "res5": ShapeSpec(channels=64, stride=32),
    }
    assert model.size_divisibility == 32
    assert not any(p.requires_grad for p in model.vit_module.parameters())  # FREEZE_VIT: true
    assert all(p.requires_grad for p in model.spm.parameters())


def test_position_embedding_paths(backbone):
    vit = backbone.backbone.vit_module
    # square input with the stored 37x37 grid: the stored table itself
    assert vit.position_embedding(592, 592, torch.float32) is vit.pos_embed
    # square input of another size is resized; the class-token row is untouched
    pos = vit.position_embedding(96, 96, torch.float32)
    assert pos.shape == (1, 1 + 36, 64)
    torch.testing.assert_close(pos[:, 0], vit.pos_embed[:, 0], rtol=0, atol=0)


def test_bad_inputs_raise(backbone):
    with pytest.raises(ValueError, match="multiple of 32"):
        backbone.backbone(torch.zeros(1, 3, 96, 144))


def test_sizes_from_name_preset_and_errors(case):
    cfg = case.cfg.clone()
    cfg.defrost()
    for key in TINY_VIT_SIZES:
        cfg.MODEL.VIT_ADAPTER[key] = None
    cfg.MODEL.VIT_ADAPTER.NAME = "vitl"
    assert vit_adapter_sizes(cfg) == VITL_SIZES
    cfg.MODEL.VIT_ADAPTER.NAME = "vitg"
    with pytest.raises(UserError, match="not set and NAME .vitg. has no preset"):
        vit_adapter_sizes(cfg)
    bad = golden_config(case)
    bad.MODEL.VIT_ADAPTER.INTERACTION_INDEXES = [[0, 0], [1, 1], [2, 2], [3, 4]]
    with pytest.raises(UserError, match="INTERACTION_INDEXES"):
        vit_adapter_sizes(bad)


def _official_vitl_keys(case) -> set[str]:
    """The official ViT-L key set: the golden tiny model is the official ViT-L code with 4 blocks,
    so its keys with ``blocks.{0..3}`` widened to ``blocks.{0..23}`` are ViT-L's."""
    keys = set()
    for key in case.sub_state_dict("backbone."):
        if key.startswith("vit_module.blocks."):
            rest = key.split(".", 3)[3]
            keys.update(f"vit_module.blocks.{i}.{rest}" for i in range(24))
        else:
            keys.add(key)
    return keys


def test_vitl_key_set_and_parameter_count(case):
    with torch.device("meta"):
        model = ViTAdapter(VITL_SIZES)
    state = model.state_dict()
    assert set(state) == _official_vitl_keys(case)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["vit_module.pos_embed"] == (1, 1370, 1024)  # 592/16 = 37 -> 37*37 + cls
    assert shapes["vit_module.patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert shapes["vit_module.blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert shapes["vit_module.blocks.0.mlp.fc1.weight"] == (4096, 1024)
    assert shapes["level_embed"] == (3, 1024)
    assert shapes["interactions.0.extractor.attn.sampling_offsets.weight"] == (16 * 4 * 2, 1024)
    assert shapes["interactions.3.extra_extractors.1.attn.attention_weights.weight"] == (16 * 4, 1024)
    assert shapes["interactions.0.extractor.attn.value_proj.weight"] == (1024, 1024)  # deform_ratio unused
    assert shapes["interactions.0.extractor.ffn.fc1.weight"] == (256, 1024)  # cffn_ratio 0.25
    assert shapes["spm.fc4.weight"] == (1024, 256, 1, 1)
    assert shapes["up.weight"] == (1024, 1024, 2, 2)
    # Hand count from the official constructors:
    #   ViT: patch 787,456 + cls 1,024 + mask 1,024 + pos 1,402,880 + 24 x 12,598,272 + norm 2,048
    #   adapter: level_embed 3,072 + spm 1,760,576 + 6 extractors x 2,830,272 + up 4,195,328 + 4 BN 8,192
    assert sum(p.numel() for p in model.parameters()) == 304_552_960 + 22_948_800


def test_capture_all_keeps_the_stage_end_blocks_of_the_backbone(case):
    """``--capture all`` stores a ViT-Adapter's self-attention of the last block of each interaction
    stage only (the blocks the adapter reads); ``backbone_blocks="all"`` or a glob naming a block
    keeps the others."""
    from callbacks.attention_capture import AttentionCapture
    from callbacks.capture_buffer import CaptureBuffer

    cfg = golden_config(case)
    cfg.MODEL.VIT_ADAPTER.DEPTH = 8
    cfg.MODEL.VIT_ADAPTER.INTERACTION_INDEXES = [[0, 1], [2, 3], [4, 5], [6, 7]]
    wrapper = nn.Module()
    wrapper.backbone = build_backbone(cfg)
    name_capture_sites(wrapper)

    def blocks(buffer) -> list[int]:
        buffer.attach(wrapper)
        return [int(s.site_name.split(".")[3]) for s in buffer.sites if s.site_kind == "backbone_self"]

    assert blocks(CaptureBuffer(["backbone_self"], [], backbone_blocks="stage_ends")) == [1, 3, 5, 7]
    assert blocks(CaptureBuffer(["backbone_self"], [])) == list(range(8))
    named = CaptureBuffer(["backbone_self"], ["backbone.vit_module.blocks.2.attn"], backbone_blocks="stage_ends")
    assert blocks(named) == [1, 2, 3, 5, 7]
    every = AttentionCapture(None, preset="all")
    assert every.run_info["backbone_blocks"] == "stage_ends" and blocks(every.buffer) == [1, 3, 5, 7]
    assert blocks(AttentionCapture(None, preset="all", backbone_blocks="all").buffer) == list(range(8))
    assert AttentionCapture(None, preset="temporal").run_info["backbone_blocks"] == "all"
    with pytest.raises(ValueError, match="backbone_blocks"):
        CaptureBuffer(["backbone_self"], [], backbone_blocks="last")
