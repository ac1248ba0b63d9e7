"""The segmenter decoder (``sem_seg_head.predictor``) and ``MaskFormerHead`` against the official data.

The decoder is fed the golden pixel-decoder outputs of every stored window and must reproduce every
predictor tensor the official run stored: per-layer predictions, query embeddings, the output of every
attention/FFN layer, every MHA output, every attention mask, and every attention-weight tensor (via
the capture sites, head-averaged and per head).
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch
from torch import nn

from dvis_attn_pl.model.attention import MultiheadAttention
from dvis_attn_pl.model.capture import disable_capture, enable_capture, name_capture_sites, select_sites
from dvis_attn_pl.model.layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from dvis_attn_pl.model.video_decoder import VideoMultiScaleMaskedTransformerDecoderDVISPlus as Decoder
from tests.golden import assert_close_ref, golden_case

PREFIX = "sem_seg_head.predictor."
CASES = ("r50_online_tiny", "r50_offline_tiny", "vitadapter_offline_tiny")
OFFICIAL_EVAL_KEYS = {
    "pred_logits",
    "pred_masks",
    "aux_outputs",
    "pred_embds",
    "pred_embds_without_norm",
    "pred_reid_embed",
    "mask_features",
    "image_feats_info",
}


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return golden_case(request.param)


def build_decoder(case) -> Decoder:
    decoder = Decoder.from_config(case.cfg, case.cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM).eval()
    decoder.load_state_dict(case.sub_state_dict(PREFIX), strict=True)
    return decoder


def rooted(decoder: nn.Module, attr: str = "predictor") -> nn.Module:
    """Hang ``decoder`` at ``sem_seg_head.<attr>`` so capture sites get their official paths."""
    root = nn.Module()
    root.sem_seg_head = nn.Module()
    setattr(root.sem_seg_head, attr, decoder)
    name_capture_sites(root)
    return root


def windows(case) -> list[tuple[str, str]]:
    """(video, window) tokens of every segmenter window stored in the case."""
    pattern = re.compile(r"^(v\d+)\.sem_seg_head\.pixel_decoder\.(win\d+)\.mask_features$")
    found = [m.groups() for m in map(pattern.match, case.intermediates) if m]
    assert found, f"{case.name}: no pixel-decoder windows stored"
    return sorted(found)


def window_inputs(case, video: str, win: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    base = f"{video}.sem_seg_head.pixel_decoder.{win}"
    feats = [case.intermediates[f"{base}.multi_scale_features.{j}"] for j in range(3)]
    return feats, case.intermediates[f"{base}.mask_features"]


class Recorder:
    """Forward hooks that keep each decoder layer's output, each MHA output and each attention mask."""

    def __init__(self, root: nn.Module):
        self.tensors: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, module in root.named_modules():
            if isinstance(module, SelfAttentionLayer | CrossAttentionLayer | FFNLayer):
                self.handles.append(module.register_forward_hook(self._keep(f"{name}.out")))
            if isinstance(module, MultiheadAttention):
                self.handles.append(module.register_forward_hook(self._keep(f"mha_out.{name}")))
                self.handles.append(module.register_forward_pre_hook(self._mask(name), with_kwargs=True))

    def _keep(self, key):
        def hook(_module, _args, output):
            assert key not in self.tensors, f"{key} recorded twice"
            self.tensors[key] = output.detach().clone()

        return hook

    def _mask(self, name):
        def hook(_module, _args, kwargs):
            if kwargs.get("attn_mask") is not None:
                self.tensors[f"attn_mask.{name}"] = kwargs["attn_mask"].clone()

        return hook

    def close(self):
        for handle in self.handles:
            handle.remove()


def compare_to_golden(case, actual: torch.Tensor, key: str) -> None:
    """Booleans exactly, floats with the README's per-tensor tolerance."""
    ref = case.intermediates[key]
    if ref.dtype == torch.bool:
        assert torch.equal(actual, ref), f"{key}: {(actual != ref).sum().item()} mask entries differ"
    else:
        assert_close_ref(actual, ref, key)


def test_state_dict_matches_official_keys(case):
    decoder = Decoder.from_config(case.cfg, case.cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM)
    official = case.sub_state_dict(PREFIX)
    ours = decoder.state_dict()
    assert set(ours) == set(official)
    assert all(ours[k].shape == official[k].shape for k in official)
    assert decoder.num_layers == case.cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1


def test_every_stored_predictor_tensor_matches(case):
    """Final and per-layer predictions, embeddings, layer outputs, MHA outputs and attention masks."""
    decoder = build_decoder(case)
    root = rooted(decoder)
    num_layers = decoder.num_layers
    for video, win in windows(case):
        expected = {
            k
            for k in case.intermediates
            if k.startswith(video + ".")
            and (f".{win}." in k or k.endswith(f".{win}"))
            and ".predictor." in k
            and not k.startswith(f"{video}.attn.")  # attention weights: test_captured_attention_*
        }
        feats, mask_features = window_inputs(case, video, win)
        recorder = Recorder(root)
        try:
            with torch.no_grad():
                out = decoder(feats, mask_features, return_aux=True)
        finally:
            recorder.close()
        assert out["mask_features"] is mask_features
        assert len(out["aux_outputs"]) == num_layers

        checked: set[str] = set()

        def compare(actual, key, checked=checked):
            compare_to_golden(case, actual, key)
            checked.add(key)

        base = f"{video}.sem_seg_head.predictor.{win}"
        for layer in range(num_layers + 1):
            pred = out if layer == num_layers else out["aux_outputs"][layer]
            for field in ("pred_logits", "pred_masks"):
                if f"{base}.layer{layer}.{field}" in case.intermediates:
                    compare(pred[field], f"{base}.layer{layer}.{field}")
        for field in ("pred_embds", "pred_embds_without_norm", "pred_reid_embed"):
            compare(out[field], f"{base}.{field}")
        for name, tensor in recorder.tensors.items():
            if name.endswith(".out"):
                key = f"{video}.{name[: -len('.out')]}.{win}.out"
            else:
                kind, module = name.split(".", 1)
                key = f"{video}.{kind}.{module}.{win}"
            compare(tensor, key)
        assert checked == expected, f"{video}/{win}: not compared {sorted(expected - checked)[:5]}"


def test_eval_output_is_the_official_dict_without_aux(case):
    decoder = build_decoder(case)
    video, win = windows(case)[0]
    feats, mask_features = window_inputs(case, video, win)
    with torch.no_grad():
        full = decoder(feats, mask_features, return_aux=True)
        out = decoder(feats, mask_features)
    assert set(out) == OFFICIAL_EVAL_KEYS
    assert out["aux_outputs"] == []
    frames, queries = mask_features.shape[0], decoder.num_queries
    classes = case.cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1
    hidden = case.cfg.MODEL.MASK_FORMER.HIDDEN_DIM
    assert out["pred_logits"].shape == (1, frames, queries, classes)
    assert out["pred_masks"].shape == (1, queries, frames, *mask_features.shape[-2:])
    assert out["pred_embds"].shape == (1, hidden, frames, queries)
    for key in ("pred_logits", "pred_masks", "pred_embds", "pred_embds_without_norm", "pred_reid_embed"):
        assert torch.equal(out[key], full[key]), key
    # pred_embds are the decoder-normed version of pred_embds_without_norm
    renormed = decoder.decoder_norm(out["pred_embds_without_norm"].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(renormed, out["pred_embds"], atol=1e-6, rtol=0)


def run_captured(root, decoder, feats, mask_features, per_head):
    """Run with every site capturing; returns (outputs, {site name: [weights per call]})."""
    got: dict[str, list[torch.Tensor]] = defaultdict(list)

    def sink(site, tensors):
        got[site.site_name].append(tensors["weights"])

    sites = select_sites(root, kinds=("decoder_cross", "decoder_self"))
    assert len(sites) == 2 * decoder.num_layers
    enable_capture(sites, sink, per_head=per_head)
    try:
        with torch.no_grad():
            out = decoder(feats, mask_features)
    finally:
        disable_capture(root)
    assert set(got) == {s.site_name for s in sites}
    assert all(len(calls) == 1 for calls in got.values())
    return out, {name: calls[0] for name, calls in got.items()}


def test_captured_attention_matches_golden(case):
    """Head-averaged weights of every window, per-head weights of video 0, and fused == captured."""
    decoder = build_decoder(case)
    root = rooted(decoder)
    kinds = {s.site_name: s.site_kind for s in select_sites(root, kinds=("decoder_cross", "decoder_self"))}
    assert sorted(set(kinds.values())) == ["decoder_cross", "decoder_self"]
    per_head_ref = case.attn_per_head
    checked_per_head = set()
    for video, win in windows(case):
        feats, mask_features = window_inputs(case, video, win)
        with torch.no_grad():
            fused = decoder(feats, mask_features)
        captured, weights = run_captured(root, decoder, feats, mask_features, per_head=False)
        for name, w in weights.items():
            key = f"{video}.attn.{name}.{win}"
            torch.testing.assert_close(w, case.intermediates[key], atol=1e-5, rtol=0, msg=key)
        for field in ("pred_logits", "pred_masks", "pred_embds"):
            assert_close_ref(captured[field], fused[field], f"captured vs fused {field}", rel=1e-6)
        if video != "v0":
            continue
        _, heads = run_captured(root, decoder, feats, mask_features, per_head=True)
        for name, w in heads.items():
            key = f"{video}.attn.{name}.{win}"
            assert w.shape[1] == decoder.num_heads
            torch.testing.assert_close(w, per_head_ref[key], atol=1e-5, rtol=0, msg=key)
            torch.testing.assert_close(w.mean(dim=1), weights[name], atol=1e-6, rtol=0)
            checked_per_head.add(key)
    stored = {k for k in per_head_ref if ".predictor." in k}
    assert checked_per_head == stored


def test_masked_cross_attention_respects_the_mask():
    """Captured cross-attention weights are zero exactly where the mask blocks (rows never all-blocked)."""
    torch.manual_seed(0)
    decoder = Decoder(
        16,
        num_classes=3,
        hidden_dim=16,
        num_queries=4,
        nheads=2,
        dim_feedforward=32,
        dec_layers=3,
        pre_norm=False,
        mask_dim=16,
        enforce_input_project=False,
    ).eval()
    root = rooted(decoder)
    masks = {}
    for layer in decoder.transformer_cross_attention_layers:
        layer.multihead_attn.register_forward_pre_hook(
            lambda m, a, kw: masks.__setitem__(m.site_name, kw["attn_mask"]), with_kwargs=True
        )
    feats = [torch.randn(2, 16, s, s) for s in (2, 4, 8)]
    _, weights = run_captured(root, decoder, feats, torch.randn(2, 16, 16, 16), per_head=True)
    for name, mask in masks.items():
        w = weights[name].flatten(0, 1)  # (frames*heads, Q, S), the mask's layout
        assert mask.shape == w.shape and mask.dtype == torch.bool
        assert not mask.all(dim=-1).any()
        assert torch.all(w[mask] == 0)
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_attention_mask_rule():
    decoder = Decoder(
        8,
        num_classes=2,
        hidden_dim=8,
        num_queries=3,
        nheads=2,
        dim_feedforward=8,
        dec_layers=1,
        pre_norm=False,
        mask_dim=8,
        enforce_input_project=False,
    )
    logits = torch.full((2, 3, 4, 4), 3.0)
    logits[:, 0] = -3.0  # every pixel blocked -> the whole row is opened
    logits[:, 2, :, :2] = -3.0  # left half blocked
    logits[1, 2, 0, 3] = -1e-9  # sigmoid rounds to exactly 0.5: not blocked (official threshold on sigmoid)
    mask = decoder._attention_mask(logits, (4, 4))
    assert mask.shape == (2 * 2, 3, 16) and mask.dtype == torch.bool
    per_head = mask.view(2, 2, 3, 4, 4)
    assert torch.equal(per_head[:, 0], per_head[:, 1])
    assert not per_head[:, :, 0].any() and not per_head[:, :, 1].any()
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, :2] = True
    assert torch.equal(per_head[:, :, 2], expected.expand(2, 2, 4, 4))
    # resized to a coarser level: bilinear (align_corners=False) of the logits, then the rule
    coarse = decoder._attention_mask(logits, (2, 2)).view(2, 2, 3, 2, 2)
    assert torch.equal(coarse[0, 0, 2], torch.tensor([[True, False], [True, False]]))


@pytest.mark.parametrize(
    ("in_channels", "enforce", "reid_layers"), [(16, False, 3), (8, False, 0), (16, True, 2)]
)
def test_input_proj_and_reid_keys(in_channels, enforce, reid_layers):
    decoder = Decoder(
        in_channels,
        num_classes=2,
        hidden_dim=16,
        num_queries=3,
        nheads=2,
        dim_feedforward=8,
        dec_layers=2,
        pre_norm=True,
        mask_dim=16,
        enforce_input_project=enforce,
        num_reid_head_layers=reid_layers,
        reid_hidden_dim=12,
    ).eval()
    keys = decoder.state_dict()
    proj = sorted(k for k in keys if k.startswith("input_proj."))
    if in_channels != 16 or enforce:
        assert proj == [f"input_proj.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
        assert keys["input_proj.0.weight"].shape == (16, in_channels, 1, 1)
    else:
        assert proj == []
    reid = sorted(k for k in keys if k.startswith("reid_embed."))
    assert reid == [f"reid_embed.layers.{i}.{p}" for i in range(reid_layers) for p in ("bias", "weight")]
    if reid_layers:
        assert keys["reid_embed.layers.0.weight"].shape == (12, 16)
    feats = [torch.randn(3, in_channels, s, s) for s in (2, 4, 8)]
    with torch.no_grad():
        out = decoder(feats, torch.randn(3, 16, 16, 16))
    assert out["pred_reid_embed"].shape == (1, 16, 3, 3)
    assert torch.isfinite(out["pred_masks"]).all()
    with pytest.raises(ValueError, match="3 feature levels"):
        decoder(feats[:2], torch.randn(3, 16, 16, 16))


def test_maskformer_head_end_to_end(case):
    """Backbone res2..res5 -> pixel decoder -> predictor, against the stored outputs of each window."""
    pytest.importorskip("dvis_attn_pl.model.pixel_decoder.msdeform_pixel_decoder")
    from dvis_attn_pl.model.backbone.base import ShapeSpec
    from dvis_attn_pl.model.sem_seg_head import MaskFormerHead

    video0, win0 = windows(case)[0]
    shapes = {
        f"res{k}": ShapeSpec(
            channels=case.intermediates[f"{video0}.backbone.{win0}.res{k}"].shape[1], stride=2**k
        )
        for k in (2, 3, 4, 5)
    }
    head = MaskFormerHead(case.cfg, shapes).eval()
    head.load_state_dict(case.sub_state_dict("sem_seg_head."), strict=True)
    assert head.num_classes == case.cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    last = head.predictor.num_layers
    for video, win in windows(case):
        features = {f"res{k}": case.intermediates[f"{video}.backbone.{win}.res{k}"] for k in (2, 3, 4, 5)}
        with torch.no_grad():
            out = head(features)
        base = f"{video}.sem_seg_head"
        assert_close_ref(
            out["mask_features"], case.intermediates[f"{base}.pixel_decoder.{win}.mask_features"]
        )
        assert_close_ref(
            out["pred_logits"], case.intermediates[f"{base}.predictor.{win}.layer{last}.pred_logits"]
        )
        assert_close_ref(
            out["pred_masks"], case.intermediates[f"{base}.predictor.{win}.layer{last}.pred_masks"]
        )
        for field in ("pred_embds", "pred_embds_without_norm", "pred_reid_embed"):
            assert_close_ref(out[field], case.intermediates[f"{base}.predictor.{win}.{field}"], field)
