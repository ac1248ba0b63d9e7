"""tracker_attention: top-k per sequence, any query counts, missing rows listed, JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvis_attn_pl.analysis.tracker_attention import frame_topk, sequence_rows, video_tracker_topk


def softmax_rows(shape, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_sequence_rows():
    assert sequence_rows([5, -1, 9, 2], [9, 2, 4, -1]).tolist() == [2, 3, -1, -1]
    with pytest.raises(ValueError, match="more than one row"):
        sequence_rows([3, 3, -1], [3])
    assert sequence_rows([-1, -1], [1]).tolist() == [-1]  # repeated "no sequence" is fine


def test_frame_topk_matches_sorting_for_odd_sizes():
    attn = softmax_rows((3, 7, 13), 0)  # 3 layers, 7 rows, 13 segmenter queries
    row_ids = [10, 11, -1, 12, 13, 14, 15]
    got = frame_topk(attn, row_ids, [12, 99], k=4)
    assert list(got) == [12]
    g = got[12]
    for layer in range(3):
        row = attn[layer, 3]
        assert g["indices"][layer].tolist() == np.argsort(-row)[:4].tolist()
        np.testing.assert_allclose(g["values"][layer], np.sort(row)[::-1][:4])
    summed = attn[:, 3].sum(0)
    assert g["sum_indices"].tolist() == np.argsort(-summed)[:4].tolist()
    np.testing.assert_allclose(g["sum_values"], np.sort(summed)[::-1][:4])


def test_k_capped_by_queries_and_ties_to_lower_index():
    attn = np.array([[[0.25, 0.5, 0.25]]])  # 1 layer, 1 row, 3 queries
    got = frame_topk(attn, [0], [0], k=10)[0]
    assert got["indices"].tolist() == [[1, 0, 2]]
    got2 = frame_topk(torch.tensor(attn[0]), [0], [0], k=2)[0]  # (R, Q) single layer, torch
    assert got2["indices"].tolist() == [[1, 0]]


def test_bad_shapes():
    with pytest.raises(ValueError, match="2 ids for 3"):
        frame_topk(np.ones((1, 3, 4)), [0, 1], [0])
    with pytest.raises(ValueError, match="k must be"):
        frame_topk(np.ones((1, 1, 4)), [0], [0], k=0)


def test_video_summary_changing_sizes_and_missing_frames():
    frames = [
        (0, softmax_rows((2, 4, 4), 1), [-1, -1, -1, -1]),  # first frame: no sequences yet
        (1, softmax_rows((2, 3, 5), 2), [0, 1, -1]),
        (2, softmax_rows((2, 6, 8), 3), [1, -1, 0, 2, 3, 4]),
    ]
    out = video_tracker_topk(frames, [0, 1, 7], k=3, layer_names=["L0", "L5"], extra={0: {"refiner_id": 2}})
    json.dumps(out, allow_nan=False)
    s0 = out["sequences"]["0"]
    assert s0["refiner_id"] == 2 and s0["frames_without_row"] == [0]
    assert set(s0["frames"]) == {"1", "2"}
    f2 = s0["frames"]["2"]
    assert f2["num_queries"] == 8
    row = frames[2][1][:, 2]  # sequence 0 is row 2 at frame 2
    assert f2["layers"]["L5"]["indices"] == np.argsort(-row[1])[:3].tolist()
    assert f2["sum_over_layers"]["indices"] == np.argsort(-row.sum(0))[:3].tolist()
    assert f2["layers_agree_on_argmax"] == bool(np.argmax(row[0]) == np.argmax(row[1]))
    assert out["sequences"]["7"]["frames"] == {} and out["sequences"]["7"]["frames_without_row"] == [0, 1, 2]
    assert "attention" not in f2["layers"]["L0"]
    with_rows = video_tracker_topk(frames[1:2], [1], k=2, include_rows=True)
    np.testing.assert_allclose(
        with_rows["sequences"]["1"]["frames"]["1"]["layers"]["0"]["attention"], frames[1][1][0, 1]
    )


def test_video_summary_error_names_the_frame():
    with pytest.raises(ValueError, match="tracker frame 4: .*more than one row"):
        video_tracker_topk([(4, np.ones((1, 2, 3)), [1, 1])], [1])
