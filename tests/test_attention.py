"""The capture-aware MultiheadAttention against torch's nn.MultiheadAttention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dvis_attn_pl.model.attention import MultiheadAttention
from dvis_attn_pl.model.capture import (
    CaptureRequest,
    attention_kind,
    disable_capture,
    enable_capture,
    name_capture_sites,
    select_sites,
)


def make_pair(embed: int = 32, heads: int = 4):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(embed, heads)
    ours = MultiheadAttention(embed, heads)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


def inputs(embed: int = 32, heads: int = 4, batch: int = 3):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(7, batch, embed, generator=g)
    kv = torch.randn(11, batch, embed, generator=g)
    mask = torch.rand(batch * heads, 7, 11, generator=g) > 0.5
    mask[..., 0] = False  # no fully blocked row, as the decoder guarantees
    return q, kv, mask


def test_same_state_dict_keys_as_torch():
    ref, ours = make_pair()
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
def test_outputs_and_weights_match_torch(use_mask, per_head):
    ref, ours = make_pair()
    q, kv, mask = inputs()
    mask = mask if use_mask else None
    ref_out, ref_w = ref(q, kv, kv, attn_mask=mask, average_attn_weights=not per_head)
    fused = ours(q, kv, kv, attn_mask=mask)
    torch.testing.assert_close(fused, ref_out, rtol=1e-5, atol=1e-6)
    got = {}
    ours.capture = CaptureRequest(sink=lambda site, t: got.update(t), per_head=per_head)
    captured = ours(q, kv, kv, attn_mask=mask)
    assert torch.equal(captured, fused), "capturing must not change the output"
    torch.testing.assert_close(got["weights"], ref_w, rtol=0, atol=1e-7)


def test_key_padding_mask():
    ref, ours = make_pair()
    q, kv, _ = inputs()
    pad = torch.zeros(3, 11, dtype=torch.bool)
    pad[:, 8:] = True
    ref_out, ref_w = ref(q, kv, kv, key_padding_mask=pad)
    got = {}
    ours.capture = CaptureRequest(sink=lambda site, t: got.update(t))
    torch.testing.assert_close(ours(q, kv, kv, key_padding_mask=pad), ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["weights"], ref_w, rtol=0, atol=1e-7)
    assert torch.all(got["weights"][..., 8:] == 0)


def test_site_naming_and_selection():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.tracker = nn.Module()
            self.tracker.transformer_cross_attention_layers = nn.ModuleList(
                [nn.Module() for _ in range(2)]
            )
            for layer in self.tracker.transformer_cross_attention_layers:
                layer.multihead_attn = MultiheadAttention(8, 2)
            self.refiner = nn.Module()
            self.refiner.transformer_time_self_attention_layers = nn.ModuleList([nn.Module()])
            self.refiner.transformer_time_self_attention_layers[0].self_attn = MultiheadAttention(8, 2)

    model = Tiny()
    name_capture_sites(model)
    names = [s.site_name for s in select_sites(model, kinds=["tracker_cross"])]
    assert names == [
        "tracker.transformer_cross_attention_layers.0.multihead_attn",
        "tracker.transformer_cross_attention_layers.1.multihead_attn",
    ]
    by_glob = select_sites(model, patterns=["refiner.*"])
    assert [s.site_kind for s in by_glob] == ["refiner_time"]
    enable_capture(by_glob, sink=lambda s, t: None)
    assert model.refiner.transformer_time_self_attention_layers[0].self_attn.capture is not None
    disable_capture(model)
    assert all(s.capture is None for s in select_sites(model, patterns=["*"]))
    with pytest.raises(ValueError, match="unknown attention kind"):
        select_sites(model, kinds=["nonsense"])
    assert attention_kind("refiner.activation_proj") == "activation"
    assert attention_kind("sem_seg_head.predictor.transformer_cross_attention_layers.3.multihead_attn") == "decoder_cross"
