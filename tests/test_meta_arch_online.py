"""The online DVIS-DAQ model end to end on the golden case ``r50_online_tiny``."""

from __future__ import annotations

import copy

import pytest
import torch

from dvis_attn_pl.model.build import build_model
from dvis_attn_pl.model.capture import capture_sites, disable_capture, enable_capture
from dvis_attn_pl.model.meta_arch import (
    DVISDAQOnline,
    VideoInput,
    inference_video_vis,
    resize_masks,
    select_topk,
)

from .golden import assert_close_ref, assert_outputs_match, golden_case

CASE = "r50_online_tiny"


@pytest.fixture(scope="module")
def case():
    return golden_case(CASE)


@pytest.fixture(scope="module")
def model(case):
    model = build_model(case.cfg)
    model.load_state_dict(case.state_dict, strict=True)
    return model


def run(model, case, video: int) -> dict:
    with torch.no_grad():
        return model(case.batched_inputs(video))


def run_traced(model, case, video: int):
    """The official outputs and the call's inference trace."""
    with torch.no_grad():
        return model.run_with_trace(case.batched_inputs(video))


def test_state_dict_matches_official(case):
    model = DVISDAQOnline(case.cfg)
    ours = model.state_dict()
    assert sorted(ours) == sorted(case.state_dict)
    assert all(tuple(ours[k].shape) == tuple(v.shape) for k, v in case.state_dict.items())
    assert "pixel_mean" not in ours and "pixel_std" not in ours
    assert torch.equal(ours["daq_criterion.empty_weight"], case.state_dict["daq_criterion.empty_weight"])
    assert {n for n, _ in model.named_children()} == {"backbone", "sem_seg_head", "tracker", "daq_criterion"}


def test_outputs_match_golden_videos_in_order(model, case):
    """v0 then v1 through the same model object, as the evaluator does."""
    for video in (0, 1):
        assert_outputs_match(run(model, case, video), case, video, f"v{video}")


def test_video_inference_input(model, case):
    """Rows fed to inference_video_vis: mean raw logits and -1e4-filled masks, creation order."""
    for video in (0, 1):
        vin = VideoInput.from_batched_inputs(case.batched_inputs(video), model.size_divisibility)
        with torch.no_grad():
            model.run_windows(vin)
        col = model.tracker.memory.collect(0, vin.num_frames, model.noise_frame_num)
        assert_close_ref(
            col.logits, case.intermediates[f"v{video}.video_inference_input.pred_cls"], "pred_cls"
        )
        assert_close_ref(
            col.masks(), case.intermediates[f"v{video}.video_inference_input.pred_masks"], "pred_masks"
        )
        assert (
            torch.arange(len(col)).tolist()
            == case.intermediates[f"v{video}.video_inference_input.pred_id"].tolist()
        )
        model.tracker.memory.end_call()
        misc = case.intermediates_meta["misc"][f"v{video}.video_inference_input"]
        assert list(vin.image_size) == misc["img_size"]
        assert list(vin.padded_size) == misc["first_resize_size"]


def test_inference_trace(model, case):
    for video in (0, 1):
        out, info = run_traced(model, case, video)
        misc = case.intermediates_meta["misc"]
        assert list(info.image_size) == misc[f"v{video}.video_inference_input"]["img_size"]
        assert list(info.padded_size) == misc[f"v{video}.video_inference_input"]["first_resize_size"]
        assert [p.row for p in info.predictions] == out["pred_ids"]
        assert info.row_seq_ids == [r["seq"] for r in misc[f"v{video}.instance_rows"]]
        trace = [t for t in case.intermediates_meta["tracker_trace"] if t["video"] == video]
        hub = {h["seq"]: h for h in trace[-1]["hub"]}
        for p in info.predictions:
            assert p.seq_id == info.row_seq_ids[p.row]
            assert p.start_frame == hub[p.seq_id]["start_frame"]
            assert p.appearance == hub[p.seq_id]["appearance"]
            assert p.end_frame == p.start_frame + hub[p.seq_id]["num_stored_frames"]
        assert [f for f, _ in info.tracker_rows] == list(range(len(trace)))
        for (frame, rows), step in zip(info.tracker_rows, trace):
            assert sorted(r for r in rows if r >= 0) == sorted(step["live_seq_order"]), frame


def test_capture_on_off_same_outputs_and_context(model, case):
    plain = run(model, case, 0)
    seen = []

    def sink(site, tensors):
        ctx = model.capture_context
        seen.append((site.site_kind, ctx.stage, ctx.window_index, ctx.frame_start, ctx.tracker_frame))

    enable_capture(capture_sites(model), sink)
    try:
        captured = run(model, case, 0)
    finally:
        disable_capture(model)
    assert_outputs_match(captured, case, 0, "captured")
    torch.testing.assert_close(
        torch.tensor(captured["pred_scores"]), torch.tensor(plain["pred_scores"]), atol=1e-5, rtol=0
    )
    assert captured["pred_labels"] == plain["pred_labels"]
    kinds = {k for k, *_ in seen}
    assert {
        "decoder_cross",
        "decoder_self",
        "tracker_cross",
        "tracker_self",
        "slot_cross",
        "slot_attn",
    } <= kinds
    for kind, stage, window, frame_start, frame in seen:
        if kind.startswith("decoder") or kind == "deform_sampling":
            assert stage == "segmenter" and frame_start == 5 * window
        else:
            assert stage == "tracker" and 0 <= frame < 7
    assert model.capture_context.video_id == case.inputs_meta["videos"][0]["video_id"]


def test_windows_of_other_sizes_give_the_same_result(case):
    """The tracker state carries across windows, so chunking does not change the math."""
    cfg = copy.deepcopy(case.cfg)
    cfg.defrost()
    cfg.MODEL.COMPAT = "fish-dvis"
    cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE = 3
    model = build_model(cfg)
    model.load_state_dict(case.state_dict, strict=True)
    assert model.window_size == 3
    assert list(model.windows(7)) == [(0, 0, 3), (1, 3, 6), (2, 6, 7)]
    assert_outputs_match(run(model, case, 0), case, 0, "window 3")


def test_long_video_in_two_calls(model, case):
    """``keep`` + ``long_video_start_fidx``: the second call continues the tracker's sequences."""
    frames = case.batched_inputs(0)[0]
    first = dict(frames, image=frames["image"][:5])
    second = dict(frames, image=frames["image"][5:], keep=True, long_video_start_fidx=5)
    with torch.no_grad():
        model([first])
        live_after_first = list(model.tracker.memory.live_ids)
        created_in_first = model.tracker.memory.num_sequences
        out, info = model.run_with_trace([second])
    assert info.first_frame == 5 and info.num_frames == 2
    assert [f for f, _ in info.tracker_rows][-2:] == [5, 6]
    # sequences alive at frame 4 are continued (they reach the end, so the noise filter keeps them)
    assert live_after_first and set(live_after_first) <= set(info.row_seq_ids)
    trace = {t["frame"]: t for t in case.intermediates_meta["tracker_trace"] if t["video"] == 0}
    assert model.tracker.memory.num_sequences == created_in_first + (
        len(trace[6]["hub"]) - len(trace[4]["hub"])
    )  # same decisions as the one-call run: new ids continue the creation count
    assert all(m.shape[0] == 2 for m in out["pred_masks"])
    assert all(0 <= p.start_frame < p.end_frame <= 2 for p in info.predictions)


def test_select_topk_is_deterministic_and_handles_small_inputs():
    logits = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]])  # equal scores everywhere
    top = select_topk(logits, num_classes=2, max_num=10)
    assert top.rows.tolist() == [0, 0, 1, 1] and top.labels.tolist() == [0, 1, 0, 1]
    top = select_topk(torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]]), num_classes=2, max_num=2)
    assert top.rows.tolist() == [0, 1] and top.labels.tolist() == [1, 0]


def test_resize_masks_matches_one_shot_interpolation():
    torch.manual_seed(0)
    masks = torch.randn(3, 4, 6, 8)
    one = torch.nn.functional.interpolate(masks, size=(24, 32), mode="bilinear", align_corners=False)[
        :, :, :20, :30
    ]
    one = torch.nn.functional.interpolate(one, size=(13, 17), mode="bilinear", align_corners=False) > 0
    chunked = resize_masks(masks, (24, 32), (20, 30), (13, 17), budget=24 * 32 * 5)  # 5 planes per chunk
    assert torch.equal(chunked, one)


def test_inference_video_vis_with_lazy_masks():
    logits = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    masks = torch.randn(2, 2, 4, 4)
    asked = []

    def lazy(rows):
        asked.append(rows.tolist())
        return masks[rows]

    out, top = inference_video_vis(logits, lazy, torch.tensor([7, 9]), (16, 16), (8, 8), (16, 16), 2, 3)
    eager, _ = inference_video_vis(logits, masks, torch.tensor([7, 9]), (16, 16), (8, 8), (16, 16), 2, 3)
    assert asked == [top.rows.tolist()]
    assert out["pred_ids"] == [9, 7, 7] and out["pred_labels"] == [0, 1, 0]
    assert all(torch.equal(a, b) for a, b in zip(out["pred_masks"], eager["pred_masks"]))
    assert out["image_size"] == (8, 8)


def test_bad_inputs_are_one_line_errors(model):
    with pytest.raises(ValueError, match="at least one frame"):
        model([{"image": [], "height": 4, "width": 4}])
    with pytest.raises(ValueError, match=r"\(3, h, w\)"):
        model([{"image": [torch.zeros(4, 4, dtype=torch.uint8)]}])
    with pytest.raises(ValueError, match="exactly one video"):
        model([])


def test_no_sequence_left_gives_the_official_empty_result(case):
    cfg = copy.deepcopy(case.cfg)
    cfg.defrost()
    cfg.MODEL.VIDEO_HEAD.AUX_INFERENCE_SELECT_THRESHOLD = 1.0
    cfg.MODEL.VIDEO_HEAD.INFERENCE_SELECT_THRESHOLD = 1.0
    model = build_model(cfg)
    model.load_state_dict(case.state_dict, strict=True)
    out, info = run_traced(model, case, 0)
    assert out["pred_scores"] == [] and out["pred_masks"] == [] and out["pred_ids"] == []
    assert tuple(out["image_size"]) == tuple(case.inputs["v0.image_mapper_uint8_TCHW"].shape[-2:])
    assert info.predictions == [] and model.tracker.memory.num_sequences == 0
    assert [f for f, _ in info.tracker_rows] == list(range(7))
