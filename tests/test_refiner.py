"""TemporalRefiner and MinVIS naive linking against the official model's intermediates
(golden case ``r50_offline_tiny``: 2 refiner layers, USE_LOCAL_ATTN, T=7 and T=3, N_ins=Q=10)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dvis_attn_pl.model.capture import disable_capture, enable_capture, name_capture_sites, select_sites
from dvis_attn_pl.model.minvis import consecutive_similarity, link_queries, naive_link, naive_link_ids
from dvis_attn_pl.model.refiner import TemporalPoolingProjection, TemporalRefiner
from tests.golden import assert_close_ref, golden_case

CASE = "r50_offline_tiny"
ATTN_ATOL = 1e-5


@pytest.fixture(scope="module")
def case():
    return golden_case(CASE)


class _Holder(nn.Module):
    """Puts the refiner at the official path ``refiner`` so capture sites get official names."""

    def __init__(self, refiner: TemporalRefiner):
        super().__init__()
        self.refiner = refiner


@pytest.fixture(scope="module")
def refiner(case):
    model = _Holder(TemporalRefiner(case.cfg).eval())
    model.refiner.load_state_dict(case.sub_state_dict("refiner."), strict=True)
    name_capture_sites(model)
    return model.refiner


def _mask_features(case, v: int) -> torch.Tensor:
    """(1, T, C, H, W): the pixel decoder's mask features of every window of video ``v``."""
    inter = case.intermediates
    keys = sorted(
        (
            k
            for k in inter
            if k.startswith(f"v{v}.sem_seg_head.pixel_decoder.win") and k.endswith(".mask_features")
        ),
        key=lambda k: int(k.split(".win")[1].split(".")[0]),
    )
    return torch.cat([inter[k] for k in keys])[None]


def _segmenter_logits(case, v: int) -> torch.Tensor:
    """(T, Q, K+1): final-layer segmenter logits of every window of video ``v``."""
    last = case.cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1
    inter = case.intermediates
    keys = sorted(
        (
            k
            for k in inter
            if k.startswith(f"v{v}.sem_seg_head.predictor.win") and k.endswith(f".layer{last}.pred_logits")
        ),
        key=lambda k: int(k.split(".win")[1].split(".")[0]),
    )
    return torch.cat([inter[k][0] for k in keys])


def _run(case, refiner, v: int, **kwargs):
    p = f"v{v}.refiner.input."
    inter = case.intermediates
    with torch.no_grad():
        return refiner(
            inter[p + "instance_embeds"],
            inter[p + "padding_mask"],
            inter[p + "frame_embeds"],
            _mask_features(case, v),
            **kwargs,
        )


# ---------------------------------------------------------------------------------------- structure


def test_keys_match_official(case, refiner):
    official = {k: tuple(v.shape) for k, v in case.sub_state_dict("refiner.").items()}
    ours = {k: tuple(v.shape) for k, v in refiner.state_dict().items()}
    assert ours == official
    assert {k.split(".")[0] for k in ours} == {
        "transformer_time_self_attention_layers",
        "transformer_obj_self_attention_layers",
        "transformer_cross_attention_layers",
        "transformer_ffn_layers",
        "decoder_norm",
        "class_embed",
        "mask_embed",
        "activation_proj",
        "conv_short_aggregate_layers",
        "conv_norms",
    }


def test_no_local_attn_has_no_conv_keys(case):
    cfg = case.cfg.clone()
    cfg.defrost()
    cfg.MODEL.VIDEO_HEAD.USE_LOCAL_ATTN = False
    keys = set(TemporalRefiner(cfg).state_dict())
    official = {k for k in case.sub_state_dict("refiner.") if not k.startswith(("conv_short", "conv_norms"))}
    assert keys == official


def test_capture_site_naming(refiner):
    site = refiner.activation_proj
    assert isinstance(site, TemporalPoolingProjection) and isinstance(site, nn.Linear)
    assert site.site_name == "refiner.activation_proj" and site.site_kind == "activation"
    assert set(site.state_dict()) == {"weight", "bias"}


def test_bad_config_values(case):
    cfg = case.cfg.clone()
    cfg.defrost()
    cfg.MODEL.REFINER.DECODER_LAYERS = 0
    with pytest.raises(ValueError, match="DECODER_LAYERS"):
        TemporalRefiner(cfg)


def test_mismatched_inputs_raise(case, refiner):
    inter = case.intermediates
    with pytest.raises(ValueError, match="frame_embeds"):
        refiner(inter["v0.refiner.input.instance_embeds"], None, inter["v1.refiner.input.frame_embeds"])


# ---------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("v", [0, 1])
def test_outputs_match_golden(case, refiner, v):
    out = _run(case, refiner, v)
    ref = case.tensors(f"v{v}.refiner.")
    for key in ("pred_logits", "pred_masks", "pred_embds"):
        assert_close_ref(out[key], ref[f"v{v}.refiner.output.{key}"], key)
    assert out["pred_masks"].dtype == torch.float32
    soft = ref[f"v{v}.refiner.activation_proj.softmax_over_time"][0, 0, :, :, 0].T  # (N, T)
    torch.testing.assert_close(out["pooling_weights"][0], soft, atol=1e-6, rtol=0)
    torch.testing.assert_close(out["pooling_weights"].sum(-1), torch.ones(1, soft.shape[0]))


@pytest.mark.parametrize("v", [0, 1])
def test_every_layer_matches_golden(case, refiner, v):
    """Hooked module outputs, layer by layer, in the official per-layer order."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    groups = (
        "transformer_time_self_attention_layers",
        "conv_short_aggregate_layers",
        "conv_norms",
        "transformer_obj_self_attention_layers",
        "transformer_cross_attention_layers",
        "transformer_ffn_layers",
    )
    for group in groups:
        for i, mod in enumerate(getattr(refiner, group)):
            name = f"{group}.{i}"
            handles.append(mod.register_forward_hook(lambda m, a, o, name=name: seen.__setitem__(name, o)))

    def keep_projection(module, args, output):
        seen["act_in"], seen["act_out"] = args[0], output

    handles.append(refiner.activation_proj.register_forward_hook(keep_projection))
    try:
        _run(case, refiner, v)
    finally:
        for h in handles:
            h.remove()
    ref = case.tensors(f"v{v}.refiner.")
    names = [n for n in seen if not n.startswith("act")]
    assert len(names) == 6 * case.cfg.MODEL.REFINER.DECODER_LAYERS
    for name in names:
        assert_close_ref(seen[name], ref[f"v{v}.refiner.{name}.call0.out"], name)
    assert_close_ref(seen["act_in"].unsqueeze(0), ref[f"v{v}.refiner.activation_proj.input"], "act in")
    assert_close_ref(seen["act_out"].unsqueeze(0), ref[f"v{v}.refiner.activation_proj.out"], "act out")


def _capture(refiner, v, case, per_head: bool):
    got: dict[str, torch.Tensor] = {}

    def sink(site, tensors):
        assert site.site_name not in got, "each refiner site fires once per video"
        got[site.site_name] = tensors["weights"]

    model = refiner
    enable_capture(
        select_sites(model, kinds=("refiner_time", "refiner_obj", "refiner_cross", "activation")),
        sink,
        per_head=per_head,
    )
    try:
        out = _run(case, refiner, v)
    finally:
        disable_capture(model)
    return out, got


@pytest.mark.parametrize("v", [0, 1])
def test_attention_weights_match_golden(case, refiner, v):
    plain = _run(case, refiner, v)
    out, got = _capture(refiner, v, case, per_head=False)
    layers = case.cfg.MODEL.REFINER.DECODER_LAYERS
    assert len(got) == 3 * layers + 1
    for name, weights in got.items():
        if name == "refiner.activation_proj":
            ref = case.intermediates[f"v{v}.refiner.activation_proj.softmax_over_time"]
        else:
            ref = case.intermediates[f"v{v}.attn.{name}.call0"]
        assert weights.shape == ref.shape, name
        torch.testing.assert_close(weights, ref, atol=ATTN_ATOL, rtol=0, msg=name)
    # capture changes nothing in the outputs
    for key in ("pred_logits", "pred_masks", "pred_embds", "pooling_weights"):
        torch.testing.assert_close(out[key], plain[key], atol=1e-5, rtol=1e-5)


def test_per_head_weights_match_golden(case, refiner):
    _, got = _capture(refiner, 0, case, per_head=True)
    heads = case.cfg.MODEL.MASK_FORMER.NHEADS
    checked = 0
    for name, weights in got.items():
        if name == "refiner.activation_proj":
            continue
        ref = case.attn_per_head[f"v0.attn.{name}.call0"]
        assert weights.shape == ref.shape and ref.shape[1] == heads, name
        torch.testing.assert_close(weights, ref, atol=ATTN_ATOL, rtol=0, msg=name)
        checked += 1
    assert checked == 3 * case.cfg.MODEL.REFINER.DECODER_LAYERS


def test_padding_mask_is_ignored(case, refiner):
    inter = case.intermediates
    p = "v0.refiner.input."
    with torch.no_grad():
        a = refiner(inter[p + "instance_embeds"], None, inter[p + "frame_embeds"], decode_masks=False)
        pad = torch.ones_like(inter[p + "padding_mask"])
        b = refiner(inter[p + "instance_embeds"], pad, inter[p + "frame_embeds"], decode_masks=False)
    assert a["pred_masks"] is None
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=0, rtol=0)


def test_decode_subset_of_rows(case, refiner):
    full = _run(case, refiner, 0)
    rows = torch.tensor([7, 2, 2, 0])
    sub = refiner.decode_masks(full["mask_embeds"], _mask_features(case, 0), rows=rows, mask_device="cpu")
    torch.testing.assert_close(sub, full["pred_masks"][:, rows], atol=1e-5, rtol=0)


def test_mask_chunking_does_not_change_masks(case, refiner):
    full = _run(case, refiner, 0)
    other = copy.deepcopy(refiner)
    other.windows = 100
    one_chunk = other.decode_masks(full["mask_embeds"], _mask_features(case, 0))
    torch.testing.assert_close(one_chunk, full["pred_masks"], atol=1e-5, rtol=0)


def test_single_frame_video(case, refiner):
    """Replicate padding and the time softmax with T=1 (pooling weight exactly 1)."""
    inter = case.intermediates
    p = "v1.refiner.input."
    with torch.no_grad():
        out = refiner(
            inter[p + "instance_embeds"][:, :, :1],
            None,
            inter[p + "frame_embeds"][:, :, :1],
            _mask_features(case, 1)[:, :1],
        )
    assert out["pred_masks"].shape[2] == 1
    assert torch.equal(out["pooling_weights"], torch.ones_like(out["pooling_weights"]))


# ---------------------------------------------------------------------------------------- MinVIS


@pytest.mark.parametrize("v", [0, 1])
def test_naive_link_matches_golden(case, v):
    embeds = case.intermediates[f"v{v}.refiner.input.frame_embeds"][0].permute(1, 2, 0)  # (T, Q, C)
    logits = _segmenter_logits(case, v)
    links = naive_link(embeds, logits)
    ref = case.tensors(f"v{v}.minvis_post_processing.")
    assert_close_ref(links.logits[None], ref[f"v{v}.minvis_post_processing.pred_logits"], "logits")
    assert_close_ref(links.embeds[None], ref[f"v{v}.minvis_post_processing.pred_embds"], "embeds")
    assert torch.equal(links.perm[0], torch.arange(embeds.shape[1]))
    # every frame's chains are a permutation of the queries
    assert torch.equal(links.perm.sort(dim=1).values, torch.arange(embeds.shape[1]).expand_as(links.perm))


def test_naive_link_picks_the_golden_rows(case):
    """The chains fed to the refiner (``minvis_query_row``) hold the refiner input embeddings."""
    for v in (0, 1):
        links = naive_link(
            case.intermediates[f"v{v}.refiner.input.frame_embeds"][0].permute(1, 2, 0),
            _segmenter_logits(case, v),
        )
        instances = case.intermediates_meta["misc"][f"v{v}.common_inference.instances"]
        inst = case.intermediates[f"v{v}.common_inference.instance_embeds"][0].permute(2, 1, 0)  # (N, T, C)
        for n, item in enumerate(instances):
            if item["kind"] == "naive_link":
                torch.testing.assert_close(links.embeds[item["minvis_query_row"]], inst[n], atol=0, rtol=0)


def test_naive_link_follows_a_shuffled_video():
    """Frames that are noisy permutations of frame 0 are linked back to the original queries."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(12, 16, generator=gen)
    perms = [torch.arange(12)] + [torch.randperm(12, generator=gen) for _ in range(4)]
    frames = torch.stack([base[p] + 0.01 * torch.randn(12, 16, generator=gen) for p in perms])
    logits = torch.stack([torch.arange(12.0)[p, None].expand(12, 3) for p in perms])
    links = naive_link(frames, logits)
    for t, p in enumerate(perms):
        assert torch.equal(p[links.perm[t]], torch.arange(12))  # chain k is base query k everywhere
    torch.testing.assert_close(links.logits[:, 0], torch.arange(12.0))
    masks = torch.stack([p.float()[:, None, None].expand(12, 2, 2) for p in perms], dim=1)  # (Q, T, 2, 2)
    got = links.masks(masks, rows=torch.tensor([3, 5]))
    assert torch.equal(got[:, :, 0, 0], torch.tensor([[3.0] * 5, [5.0] * 5]))


def test_naive_link_single_frame_and_similarity_shape():
    x = torch.randn(1, 4, 8)
    assert torch.equal(link_queries(x), torch.arange(4)[None])
    assert consecutive_similarity(torch.randn(3, 4, 8)).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="disagree"):
        naive_link(torch.randn(2, 4, 8), torch.randn(2, 5, 3))


def test_naive_link_ids():
    assert naive_link_ids(3) == [100001000, 100002000, 100003000]
    assert naive_link_ids(1, video_start=7) == [(10000 + 7) * 10000 + 1000]
    assert naive_link_ids(0) == []
