"""ResNet backbone: detectron2 key layout, config knobs, and the official outputs (golden cases)."""

from __future__ import annotations

import pytest
import torch
from fvcore.common.config import CfgNode

from dvis_attn_pl.model.backbone import BACKBONES, ResNet, ShapeSpec, build_backbone, register_backbone
from dvis_attn_pl.model.conv_norm import FrozenBatchNorm2d
from dvis_attn_pl.utils.errors import UserError
from tests.golden import assert_close_ref, golden_case


def resnet_cfg(**resnets) -> CfgNode:
    """A minimal config with detectron2's RESNETS defaults, overridden by ``resnets``."""
    r = dict(
        DEPTH=50,
        OUT_FEATURES=["res2", "res3", "res4", "res5"],
        NUM_GROUPS=1,
        NORM="FrozenBN",
        WIDTH_PER_GROUP=64,
        STRIDE_IN_1X1=True,
        RES5_DILATION=1,
        RES2_OUT_CHANNELS=256,
        STEM_OUT_CHANNELS=64,
        DEFORM_ON_PER_STAGE=[False, False, False, False],
        DEFORM_MODULATED=False,
        DEFORM_NUM_GROUPS=1,
    )
    r.update(resnets)
    return CfgNode(
        {
            "MODEL": {
                "PIXEL_MEAN": [123.675, 116.28, 103.53],
                "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 0},
                "RESNETS": r,
            }
        }
    )


def test_r50_key_layout_matches_detectron2():
    sd = build_backbone(resnet_cfg(STRIDE_IN_1X1=False)).state_dict()
    assert len(sd) == 265  # the official R50 backbone (docs: 5 stem + 50/65/95/50)
    assert sum(k.startswith("stem.") for k in sd) == 5
    assert [sum(k.startswith(f"res{s}.") for k in sd) for s in (2, 3, 4, 5)] == [50, 65, 95, 50]
    assert sd["stem.conv1.weight"].shape == (64, 3, 7, 7)
    for buf in ("weight", "bias", "running_mean", "running_var"):
        assert sd[f"stem.conv1.norm.{buf}"].shape == (64,)
    assert sd["res2.0.shortcut.weight"].shape == (256, 64, 1, 1)
    assert sd["res2.1.conv1.weight"].shape == (64, 256, 1, 1)
    assert sd["res3.3.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["res4.0.shortcut.weight"].shape == (1024, 512, 1, 1)
    assert sd["res5.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert not any(k.endswith(".bias") and ".norm." not in k for k in sd), "convs have no bias"
    assert not any("num_batches_tracked" in k for k in sd)


@pytest.mark.parametrize(
    ("depth", "num_keys", "res5_channels", "shortcut_key"),
    [
        (18, 100, 512, "res3.0.shortcut.weight"),
        (34, 180, 512, "res4.0.shortcut.weight"),
        (101, 520, 2048, "res4.22.conv3.weight"),
    ],
)
def test_depths_build_with_right_keys(depth, num_keys, res5_channels, shortcut_key):
    over = {"RES2_OUT_CHANNELS": 64} if depth < 50 else {}
    model = build_backbone(resnet_cfg(DEPTH=depth, **over))
    sd = model.state_dict()
    assert len(sd) == num_keys
    assert shortcut_key in sd
    assert model.output_shape()["res5"] == ShapeSpec(channels=res5_channels, stride=32)
    if depth < 50:
        assert "res2.0.shortcut.weight" not in sd and "res2.0.conv3.weight" not in sd
        assert sd["res3.0.conv1.weight"].shape == (128, 64, 3, 3)


def test_config_knobs_are_honoured():
    cfg = resnet_cfg(
        NUM_GROUPS=32, WIDTH_PER_GROUP=4, STRIDE_IN_1X1=True, RES5_DILATION=2, OUT_FEATURES=["res3", "res5"]
    )
    model = build_backbone(cfg)
    assert model.res3[0].conv1.stride == (2, 2) and model.res3[0].conv2.stride == (1, 1)
    assert model.res2[0].conv2.weight.shape == (128, 4, 3, 3)  # 32 groups x 4
    assert model.res5[0].conv2.dilation == (2, 2) and model.res5[0].conv2.stride == (1, 1)
    assert model.output_shape() == {"res3": ShapeSpec(512, stride=8), "res5": ShapeSpec(2048, stride=16)}
    out = model(torch.zeros(1, 3, 64, 64))
    assert sorted(out) == ["res3", "res5"] and out["res5"].shape == (1, 2048, 4, 4)

    shallow = build_backbone(resnet_cfg(OUT_FEATURES=["res2", "res3"], STRIDE_IN_1X1=False))
    assert not hasattr(shallow, "res4"), "stages past the last requested output are not built"
    assert shallow.res3[0].conv2.stride == (2, 2)


@pytest.mark.parametrize(
    ("norm", "norm_type"), [("BN", torch.nn.BatchNorm2d), ("GN", torch.nn.GroupNorm), ("", None)]
)
def test_other_norms(norm, norm_type):
    model = build_backbone(resnet_cfg(NORM=norm, STEM_OUT_CHANNELS=64))
    if norm_type is None:
        assert model.stem.conv1.norm is None
    else:
        assert isinstance(model.res2[0].conv1.norm, norm_type)
    assert model.eval()(torch.zeros(1, 3, 32, 32))["res5"].shape == (1, 2048, 1, 1)


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"DEFORM_ON_PER_STAGE": [False, True, False, False]}, "DEFORM_ON_PER_STAGE"),
        ({"DEPTH": 42}, "DEPTH"),
        ({"DEPTH": 18}, "RES2_OUT_CHANNELS"),
        ({"NORM": "weird"}, "NORM"),
        ({"OUT_FEATURES": ["res6"]}, "OUT_FEATURES"),
    ],
)
def test_bad_config_is_a_clear_error(over, needle):
    with pytest.raises(UserError, match=needle):
        build_backbone(resnet_cfg(**over))


def test_registry():
    with pytest.raises(UserError, match="MODEL.BACKBONE.NAME"):
        build_backbone(CfgNode({"MODEL": {"BACKBONE": {"NAME": "NoSuchNet"}}}))
    assert BACKBONES["build_resnet_backbone"] is not None

    @register_backbone("test_tiny_backbone")
    def _tiny(cfg):
        return torch.nn.Identity()

    try:
        assert isinstance(
            build_backbone(CfgNode({"MODEL": {"BACKBONE": {"NAME": "test_tiny_backbone"}}})),
            torch.nn.Identity,
        )
    finally:
        BACKBONES.pop("test_tiny_backbone")


def test_frozen_bn_formula_and_grad_path():
    torch.manual_seed(0)
    bn = FrozenBatchNorm2d(4)
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 3, 3)
    expected = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-5)
    expected = expected * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    torch.testing.assert_close(bn(x.requires_grad_()), expected)
    assert FrozenBatchNorm2d(3).running_var[0].item() == pytest.approx(1 - 1e-5)


@pytest.mark.parametrize("case_name", ["r50_online_tiny", "r50_offline_tiny"])
def test_matches_official_backbone_outputs(case_name):
    case = golden_case(case_name)
    model = build_backbone(case.cfg).eval()
    assert isinstance(model, ResNet)
    model.load_state_dict(case.sub_state_dict("backbone."), strict=True)
    with torch.no_grad():
        out = model(case.intermediates["v0.backbone.win0.input"])
    assert sorted(out) == ["res2", "res3", "res4", "res5"]
    for name, feat in out.items():
        ref = case.intermediates[f"v0.backbone.win0.{name}"]
        assert_close_ref(feat, ref, f"{case_name} {name}")
        assert model.output_shape()[name].channels == ref.shape[1]
        width = case.intermediates["v0.backbone.win0.input"].shape[-1]
        assert model.output_shape()[name].stride == width // ref.shape[-1]


def test_cpu_bf16_autocast_and_half():
    case = golden_case("r50_online_tiny")
    model = build_backbone(case.cfg).eval()
    model.load_state_dict(case.sub_state_dict("backbone."), strict=True)
    x = case.intermediates["v0.backbone.win0.input"][:2]
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        half = model.half()(x.half())
    for name in ref:
        scale = ref[name].abs().max()
        assert low[name].dtype == torch.bfloat16
        assert (low[name].float() - ref[name]).abs().max() <= 0.1 * scale
        assert (half[name].float() - ref[name]).abs().max() <= 0.02 * scale
