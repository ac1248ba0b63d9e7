"""Temporal rollout: hand-computed cases, properties, and an independent NumPy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvis_attn_pl.analysis.rollout import (
    discard_lowest,
    mask_padding,
    rollout_readout,
    temporal_rollout,
)


def random_attention(b: int, layers: int, t: int, heads: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (b, layers, t, t) if heads is None else (b, layers, heads, t, t)
    return torch.rand(shape, generator=g, dtype=torch.float64).softmax(dim=-1)


def numpy_rollout(attn: np.ndarray, residual: str = "identity") -> np.ndarray:
    """Straightforward per-instance, per-layer loop, written independently of the torch version."""
    b, layers, t, _ = attn.shape
    out = np.zeros((b, t, t))
    for i in range(b):
        r = np.eye(t)
        for k in range(layers):
            a = attn[i, k] + np.eye(t)
            if residual == "identity":
                a = a / a.sum(axis=1, keepdims=True)
            else:
                a = a / 2.0
            r = a @ r
        out[i] = r
    return out


def test_hand_computed_two_layers():
    a1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    a2 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    attn = torch.stack([a1, a2])[None]
    # T1 = rownorm(A1 + I) = [[0.75, 0.25], [0, 1]]; T2 = [[1, 0], [0.25, 0.75]]
    expected = torch.tensor([[0.75, 0.25], [0.1875, 0.8125]], dtype=torch.float64)
    r = temporal_rollout(attn)
    torch.testing.assert_close(r[0], expected)
    torch.testing.assert_close(rollout_readout(r)[0], torch.tensor([0.46875, 0.53125], dtype=torch.float64))


@pytest.mark.parametrize("residual", ["identity", "half"])
def test_matches_numpy_loop_and_rows_sum_to_one(residual):
    attn = random_attention(5, 6, 9, seed=1)
    r = temporal_rollout(attn, residual=residual)
    np.testing.assert_allclose(r.numpy(), numpy_rollout(attn.numpy(), residual), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.sum(-1), torch.ones(5, 9, dtype=torch.float64))


def test_identity_in_identity_out():
    eye = torch.eye(7).expand(3, 4, 7, 7).contiguous()
    torch.testing.assert_close(temporal_rollout(eye), torch.eye(7).expand(3, 7, 7))


def test_head_fusion_mean_equals_averaged_input():
    per_head = random_attention(2, 3, 6, heads=4, seed=2)
    fused = temporal_rollout(per_head, head_fusion="mean")
    torch.testing.assert_close(fused, temporal_rollout(per_head.mean(dim=2)))
    maxed = temporal_rollout(per_head, head_fusion="max")
    assert not torch.allclose(maxed, fused)
    torch.testing.assert_close(maxed.sum(-1), torch.ones(2, 6, dtype=torch.float64))


def test_start_layer_skips_layers():
    attn = random_attention(2, 4, 5, seed=3)
    torch.testing.assert_close(temporal_rollout(attn, start_layer=2), temporal_rollout(attn[:, 2:]))
    with pytest.raises(ValueError, match="start layer"):
        temporal_rollout(attn, start_layer=4)


def test_discard_ratio_zeroes_lowest_per_row():
    row = torch.tensor([[[[0.1, 0.4, 0.2, 0.3]]]])
    out = discard_lowest(row, 0.5)
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 0.4, 0.0, 0.3]]]]))


def test_padding_frames_do_not_feed_valid_frames():
    attn = random_attention(1, 3, 6, seed=4)
    valid = torch.tensor([[True, True, True, True, False, False]])
    r = temporal_rollout(attn, valid=valid)
    assert torch.all(r[0, :4, 4:] == 0)
    torch.testing.assert_close(r[0, 4:, 4:], torch.eye(2, dtype=torch.float64))
    # masking equals running the rollout on the valid sub-video alone
    sub = attn[:, :, :4, :4]
    sub = sub / sub.sum(-1, keepdim=True)
    torch.testing.assert_close(r[0, :4, :4], temporal_rollout(sub)[0])
    imp = rollout_readout(r, valid=valid)
    torch.testing.assert_close(imp[0, :4], rollout_readout(temporal_rollout(sub))[0])
    masked = mask_padding(attn, valid)
    assert torch.all(masked[0, :, 4:] == 0)


def test_readouts():
    attn = random_attention(3, 2, 5, seed=5)
    r = temporal_rollout(attn)
    torch.testing.assert_close(rollout_readout(r, "row", frame=2), r[:, 2])
    a = torch.rand(3, 5, dtype=torch.float64).softmax(-1)
    expected = torch.einsum("bt,bts->bs", a, r)
    torch.testing.assert_close(rollout_readout(r, "activation", activation=a), expected)
    assert torch.allclose(rollout_readout(r, "activation", activation=a).sum(-1), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        rollout_readout(r, "row")
    with pytest.raises(ValueError):
        rollout_readout(r, "nonsense")


def test_float16_input_computed_in_float32():
    attn = random_attention(2, 3, 4, seed=6).half()
    r = temporal_rollout(attn)
    assert r.dtype == torch.float32
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 4), atol=1e-3, rtol=0)
