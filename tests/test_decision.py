"""Decision timing helpers: prefix pooling, prefix means, settle frames."""

from __future__ import annotations

import torch

from dvis_attn_pl.analysis.decision import prefix_lengths, settle_frame
from dvis_attn_pl.model.prefix_logits import mean_prefix_logits, pooled_prefix_logits


def test_pooled_prefix_matches_explicit_softmax_per_prefix():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, generator=g, dtype=torch.float64) * 3
    x = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(4, 5).double()
    got = pooled_prefix_logits(a, x, head)
    for k in range(1, 7):
        w = a[:, :k].softmax(dim=1)
        z = (w[..., None] * x[:, :k]).sum(1)
        torch.testing.assert_close(got[:, k - 1], head(z).float(), rtol=1e-5, atol=1e-5)


def test_full_prefix_equals_whole_video_pooling():
    a = torch.tensor([[0.0, 100.0, -50.0]])
    x = torch.tensor([[[1.0], [2.0], [3.0]]])
    got = pooled_prefix_logits(a, x, lambda z: z)
    torch.testing.assert_close(got[0, :, 0], torch.tensor([1.0, 2.0, 2.0]))


def test_mean_prefix_respects_presence():
    logits = torch.tensor([[[1.0], [3.0], [5.0], [100.0]]])
    present = torch.tensor([[False, True, True, False]])
    got = mean_prefix_logits(logits, present)[0, :, 0]
    assert torch.isnan(got[0])
    torch.testing.assert_close(got[1:], torch.tensor([3.0, 4.0, 4.0]))


def test_settle_frame():
    labels = torch.tensor([[0, 1, 1, 1], [2, 2, 2, 2], [1, 0, 1, 0], [3, 3, 1, 1]])
    assert settle_frame(labels).tolist() == [1, 0, 3, 2]


def test_prefix_lengths():
    assert prefix_lengths(10, (0.25, 0.5, 1.0)) == [3, 5, 10]
    assert prefix_lengths(1, (0.1, 1.0)) == [1, 1]
    assert prefix_lengths(7, (0.5,)) == [4]


def test_model_prefix_posterior_ends_at_the_final_scores():
    """After all frames, the prefix posterior is exactly what the model scored (online and offline)."""
    import pytest

    from dvis_attn_pl import build_model
    from dvis_attn_pl.analysis.decision import foreground_probs
    from tests.golden import golden_case

    for name in ("r50_online_tiny", "r50_offline_tiny"):
        case = golden_case(name)
        model = build_model(case.cfg)
        model.load_state_dict(case.state_dict, strict=True)
        with torch.no_grad():
            out, info = model.run_with_trace(case.batched_inputs(0))
        rows = torch.tensor([p.row for p in info.predictions])
        labels = torch.tensor(out["pred_labels"])
        final = foreground_probs(info.prefix_logits[rows, -1])[torch.arange(len(rows)), labels]
        assert final.tolist() == pytest.approx(out["pred_scores"], abs=1e-6)
        assert info.prefix_logits.shape[1] == len(case.batched_inputs(0)[0]["image"])
