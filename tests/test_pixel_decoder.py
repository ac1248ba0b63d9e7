"""MSDeformAttn and the MSDeformAttn pixel decoder against the official outputs (golden cases)."""

from __future__ import annotations

import pytest
import torch
from fvcore.common.config import CfgNode

from dvis_attn_pl.model.backbone import ShapeSpec
from dvis_attn_pl.model.capture import disable_capture, enable_capture, name_capture_sites
from dvis_attn_pl.model.pixel_decoder import MSDeformAttn, MSDeformAttnPixelDecoder, deform_attn_sample
from tests.golden import assert_close_ref, golden_case

R50_CASES = ["r50_online_tiny", "r50_offline_tiny"]
PREFIX = "sem_seg_head.pixel_decoder."
FEATURES = ("res2", "res3", "res4", "res5")


def build_decoder(case) -> MSDeformAttnPixelDecoder:
    shapes = {
        f: ShapeSpec(channels=case.intermediates[f"v0.backbone.win0.{f}"].shape[1], stride=2 ** (i + 2))
        for i, f in enumerate(FEATURES)
    }
    decoder = MSDeformAttnPixelDecoder(case.cfg, shapes).eval()
    decoder.load_state_dict(case.sub_state_dict(PREFIX), strict=True)
    return decoder


def golden_windows(case) -> list[tuple[str, str]]:
    keys = {
        tuple(k.split(".")[0:3:2]) for k in case.intermediates if ".backbone.win" in k and k.endswith(".res2")
    }
    return sorted(keys)  # [(video, window)]


def backbone_features(case, video: str, window: str) -> dict[str, torch.Tensor]:
    return {f: case.intermediates[f"{video}.backbone.{window}.{f}"] for f in FEATURES}


@pytest.mark.parametrize("case_name", R50_CASES)
def test_outputs_match_official_every_window(case_name):
    case = golden_case(case_name)
    decoder = build_decoder(case)
    windows = golden_windows(case)
    assert len(windows) >= 3  # v0.win0, v0.win1, v1.win0
    for video, window in windows:
        with torch.no_grad():
            mask_features, encoder_features, multi_scale = decoder.forward_features(
                backbone_features(case, video, window)
            )
        ref = f"{video}.sem_seg_head.pixel_decoder.{window}"
        assert_close_ref(mask_features, case.intermediates[f"{ref}.mask_features"], f"{ref}.mask_features")
        assert len(multi_scale) == 3
        for i, feat in enumerate(multi_scale):
            assert_close_ref(feat, case.intermediates[f"{ref}.multi_scale_features.{i}"], f"{ref}.ms{i}")
        assert encoder_features is multi_scale[0]  # the stride-32 encoder output


@pytest.mark.parametrize("case_name", R50_CASES)
def test_internals_match_official(case_name):
    case = golden_case(case_name)
    decoder = build_decoder(case)
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda _m, _i, out: seen.__setitem__(name, out)

    for i, proj in enumerate(decoder.input_proj):
        proj.register_forward_hook(keep(f"input_proj.{i}"))
    for i, layer in enumerate(decoder.transformer.encoder.layers):
        layer.register_forward_hook(keep(f"transformer.encoder.layers.{i}"))
        layer.self_attn.register_forward_hook(keep(f"transformer.encoder.layers.{i}.self_attn"))
    first = decoder.transformer.encoder.layers[0].self_attn
    first.sampling_offsets.register_forward_hook(keep("offsets"))
    first.attention_weights.register_forward_hook(keep("weights"))
    decoder.layer_1.register_forward_hook(keep("layer_1"))

    with torch.no_grad():
        decoder.forward_features(backbone_features(case, "v0", "win0"))
    names = [k for k in seen if k not in ("offsets", "weights")]
    assert len(names) == 3 + 2 * len(decoder.transformer.encoder.layers) + 1
    for name in names:
        ref = case.intermediates[f"v0.{PREFIX}{name}.win0.out"]
        assert_close_ref(seen[name], ref, name)
    raw = f"v0.{PREFIX}transformer.encoder.layers.0.self_attn"
    assert_close_ref(
        seen["offsets"][:1], case.intermediates[f"{raw}.sampling_offsets.win0.out_first_frame"], "offs"
    )
    assert_close_ref(
        seen["weights"][:1], case.intermediates[f"{raw}.attention_weights.win0.out_first_frame"], "aw"
    )


def test_capture_is_exact_and_consistent():
    case = golden_case("r50_online_tiny")
    decoder = build_decoder(case)
    name_capture_sites(decoder)
    feats = backbone_features(case, "v0", "win0")
    with torch.no_grad():
        plain = decoder.forward_features(feats)
    records: list[tuple[str, dict]] = []
    enable_capture(
        [layer.self_attn for layer in decoder.transformer.encoder.layers],
        lambda site, tensors: records.append((site.site_name, tensors)),
    )
    try:
        with torch.no_grad():
            captured = decoder.forward_features(feats)
    finally:
        disable_capture(decoder)
    assert torch.equal(plain[0], captured[0])
    for a, b in zip(plain[2], captured[2]):
        assert torch.equal(a, b)
    assert [name for name, _ in records] == [
        "transformer.encoder.layers.0.self_attn",
        "transformer.encoder.layers.1.self_attn",
    ]

    tensors = records[0][1]
    frames, length = feats["res2"].shape[0], sum(f.shape[-2] * f.shape[-1] for f in list(feats.values())[1:])
    weights, locations = tensors["attention_weights"], tensors["sampling_locations"]
    assert weights.shape == (frames, length, 8, 3, 4)
    assert locations.shape == (frames, length, 8, 3, 4, 2)
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(frames, length, 8))

    # Against the official raw Linear outputs of the first frame: softmax over levels x points, and
    # locations = pixel-centre reference + offsets / (W_l, H_l).
    raw = f"v0.{PREFIX}transformer.encoder.layers.0.self_attn"
    logits = case.intermediates[f"{raw}.attention_weights.win0.out_first_frame"]
    expected = logits.view(1, length, 8, 12).softmax(-1).view(1, length, 8, 3, 4)
    assert (weights[:1] - expected).abs().max() <= 1e-5
    offsets = case.intermediates[f"{raw}.sampling_offsets.win0.out_first_frame"].view(1, length, 8, 3, 4, 2)
    shapes = [(feats[f].shape[-2], feats[f].shape[-1]) for f in ("res5", "res4", "res3")]
    centres = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        centres.append(torch.stack([xs.flatten() / w, ys.flatten() / h], -1))
    ref_points = torch.cat(centres)[:, None, None, None, :]
    norm = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)[:, None, :]
    assert_close_ref(locations[0], ref_points + offsets[0] / norm, "sampling_locations")


def naive_deform_attn(value, shapes, locations, weights):
    """Explicit bilinear interpolation (pixel centres at (i + 0.5) / size, zeros outside)."""
    n, _, heads, d = value.shape
    _, len_q, _, levels, points, _ = locations.shape
    out = torch.zeros(n, len_q, heads, d, dtype=torch.float64)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(len_q):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    grid = value[b, starts[lvl] : starts[lvl + 1], m].double().view(h, w, d)
                    for p in range(points):
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
                        acc = torch.zeros(d, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * grid[yy, xx]
                        out[b, q, m] += weights[b, q, m, lvl, p].item() * acc
    return out.view(n, len_q, heads * d)


def test_sampling_equals_explicit_bilinear():
    torch.manual_seed(0)
    shapes = [(3, 4), (2, 5)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 3)
    locations = torch.rand(2, 5, 2, 2, 3, 2) * 1.4 - 0.2  # some points fall outside the map
    weights = torch.rand(2, 5, 2, 2, 3)
    got = deform_attn_sample(value, shapes, locations, weights)
    torch.testing.assert_close(
        got.double(), naive_deform_attn(value, shapes, locations, weights), atol=1e-5, rtol=1e-5
    )


def test_adapter_call_signatures():
    """The ViT-Adapter's use: 1 level (extractor) or 3 levels with one shared reference (injector),
    ``ratio`` accepted without changing widths, tensor spatial shapes, level_start_index, no mask."""
    torch.manual_seed(0)
    extractor = MSDeformAttn(d_model=64, n_levels=1, n_heads=16, n_points=4, ratio=0.5).eval()
    assert extractor.value_proj.weight.shape == (64, 64) and extractor.output_proj.weight.shape == (64, 64)
    shapes = torch.tensor([[4, 6]])
    ref = torch.rand(1, 21 * 4, 1, 2)
    out = extractor(torch.randn(2, 84, 64), ref, torch.randn(2, 24, 64), shapes, torch.tensor([0]), None)
    assert out.shape == (2, 84, 64)

    injector = MSDeformAttn(d_model=64, n_levels=3, n_heads=16, n_points=4, ratio=0.5).eval()
    level_shapes = torch.tensor([[8, 12], [4, 6], [2, 3]])
    start = torch.tensor([0, 96, 120])
    query, feat = torch.randn(2, 24, 64), torch.randn(2, 126, 64)
    out = injector(query, torch.rand(1, 24, 1, 2), feat, level_shapes, start, None)
    assert out.shape == (2, 24, 64)
    shared = torch.rand(1, 24, 1, 2)
    per_level = injector(query, shared.expand(2, -1, 3, -1), feat, [(8, 12), (4, 6), (2, 3)])
    torch.testing.assert_close(per_level, injector(query, shared, feat, level_shapes, start))

    # a padding mask zeroes the masked values; masking everything leaves only the output bias
    mask = torch.ones(2, 126, dtype=torch.bool)
    masked = injector(query, torch.rand(1, 24, 1, 2), feat, level_shapes, start, mask)
    torch.testing.assert_close(masked, injector.output_proj.bias.expand_as(masked))
    # 4-value reference boxes
    boxes = torch.cat([torch.rand(1, 24, 3, 2), torch.full((1, 24, 3, 2), 0.2)], -1)
    assert injector(query, boxes, feat, level_shapes).shape == (2, 24, 64)
    with pytest.raises(ValueError, match="levels"):
        injector(query, torch.rand(1, 24, 1, 2), feat, [(8, 12), (4, 6)])


def test_runs_fp32_under_cpu_autocast_and_after_half():
    case = golden_case("r50_online_tiny")
    decoder = build_decoder(case)
    feats = {k: v[:2] for k, v in backbone_features(case, "v0", "win0").items()}
    with torch.no_grad():
        ref = decoder.forward_features(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = decoder.forward_features({k: v.bfloat16() for k, v in feats.items()})
            same = decoder.forward_features(feats)
        half = decoder.half().forward_features({k: v.half() for k, v in feats.items()})
    assert low[0].dtype == torch.float32 and all(f.dtype == torch.float32 for f in low[2])
    assert torch.equal(same[0], ref[0]), "autocast must not change the fp32 pixel decoder"
    scale = ref[0].abs().max()
    assert (low[0] - ref[0]).abs().max() <= 0.1 * scale
    assert half[0].dtype == torch.float16 and (half[0].float() - ref[0]).abs().max() <= 0.02 * scale


def test_fpn_levels_follow_strides():
    """COMMON_STRIDE 8 with the encoder on res3..res5 needs no FPN level; encoder on res4..res5
    with COMMON_STRIDE 4 needs two (adapter_1/layer_1 on res2, adapter_2/layer_2 on res3)."""
    shapes = {f: ShapeSpec(channels=16 * 2**i, stride=2 ** (i + 2)) for i, f in enumerate(FEATURES)}

    def cfg(deform, stride):
        head = dict(
            CONVS_DIM=32,
            MASK_DIM=16,
            NORM="GN",
            IN_FEATURES=list(FEATURES),
            DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES=deform,
            COMMON_STRIDE=stride,
            TRANSFORMER_ENC_LAYERS=1,
        )
        return CfgNode({"MODEL": {"SEM_SEG_HEAD": head, "MASK_FORMER": {"NHEADS": 4, "DROPOUT": 0.0}}})

    none = MSDeformAttnPixelDecoder(cfg(["res3", "res4", "res5"], 8), shapes)
    assert none.num_fpn_levels == 0 and not any(
        k.startswith(("adapter", "layer_")) for k in none.state_dict()
    )
    two = MSDeformAttnPixelDecoder(cfg(["res4", "res5"], 4), shapes).eval()
    assert two.num_fpn_levels == 2
    assert two.adapter_1.weight.shape == (32, 16, 1, 1) and two.adapter_2.weight.shape == (32, 32, 1, 1)
    assert len(two.input_proj) == 2 and two.transformer.level_embed.shape == (2, 32)
    feats = {f: torch.randn(1, s.channels, 64 // s.stride, 64 // s.stride) for f, s in shapes.items()}
    with torch.no_grad():
        mask_features, _, multi_scale = two.forward_features(feats)
    assert mask_features.shape == (1, 16, 16, 16)
    assert [tuple(f.shape[-2:]) for f in multi_scale] == [(2, 2), (4, 4), (8, 8)]
