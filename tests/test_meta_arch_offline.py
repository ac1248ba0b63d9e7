"""The offline DVIS-DAQ model end to end on the golden cases ``r50_offline_tiny`` (official code) and
``vitadapter_offline_tiny`` (fish-dvis: configurable window, tracker ``forward_offline_mode``)."""

from __future__ import annotations

import pytest
import torch

from dvis_attn_pl.model.build import build_model
from dvis_attn_pl.model.capture import capture_sites, disable_capture, enable_capture
from dvis_attn_pl.model.meta_arch import VideoInput
from dvis_attn_pl.model.meta_arch_offline import (
    NAIVE_LINK,
    TRACKED,
    DVISDAQOffline,
    OfflineInferenceTrace,
    official_topk,
)
from tests.golden import assert_close_ref, assert_outputs_match, golden_case, golden_config

CASE = "r50_offline_tiny"
ATTN_ATOL = 1e-5


@pytest.fixture(scope="module")
def case():
    return golden_case(CASE)


def _build(cfg, state_dict) -> DVISDAQOffline:
    model = build_model(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.fixture(scope="module")
def model(case):
    return _build(case.cfg, case.state_dict)


def run(model, case, video: int) -> dict:
    with torch.no_grad():
        return model(case.batched_inputs(video))


def run_traced(model, case, video: int):
    """The official outputs and the call's inference trace."""
    with torch.no_grad():
        return model.run_with_trace(case.batched_inputs(video))


def _cfg(case, **changes):
    cfg = case.cfg.clone()
    cfg.defrost()
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


# ---------------------------------------------------------------------------------------- structure


def test_state_dict_matches_official(case):
    model = DVISDAQOffline(case.cfg)
    ours = model.state_dict()
    assert sorted(ours) == sorted(case.state_dict)
    assert all(tuple(ours[k].shape) == tuple(v.shape) for k, v in case.state_dict.items())
    assert {n for n, _ in model.named_children()} == {
        "backbone",
        "sem_seg_head",
        "tracker",
        "daq_criterion",
        "refiner",
    }
    sites = {s.site_name: s.site_kind for s in capture_sites(build_model(case.cfg))}
    assert sites["refiner.activation_proj"] == "activation"
    assert sites["refiner.transformer_time_self_attention_layers.1.self_attn"] == "refiner_time"


# ---------------------------------------------------------------------------------------- numerics


def test_outputs_match_golden_videos_in_order(model, case):
    """v0 then v1 through the same model object; pred_ids are refiner rows in the official order."""
    for video in (0, 1):
        assert_outputs_match(run(model, case, video), case, video, f"v{video}")


@pytest.mark.parametrize("video", [0, 1])
def test_common_inference_matches_golden(model, case, video):
    vin = VideoInput.from_batched_inputs(case.batched_inputs(video), model.size_divisibility)
    with torch.no_grad():
        feats, inst = model.common_inference(vin)
    ref = case.tensors(f"v{video}.common_inference.")
    pre = f"v{video}.common_inference."
    assert_close_ref(feats.frame_embeds.permute(2, 0, 1)[None], ref[pre + "frame_embeds"], "frame_embeds")
    assert_close_ref(inst.embeds.permute(2, 1, 0)[None], ref[pre + "instance_embeds"], "instance_embeds")
    assert torch.equal(inst.padding[None], ref[pre + "padding_masks"])
    assert_close_ref(inst.logits[None], ref[pre + "online_out.pred_logits"], "online logits")
    # full-video mask features, as the segmenter windows produced them
    num_windows = -(-vin.num_frames // 5)
    windows = [
        case.intermediates[f"v{video}.sem_seg_head.pixel_decoder.win{w}.mask_features"]
        for w in range(num_windows)
    ]
    assert_close_ref(feats.mask_features, torch.cat(windows), "mask_features")

    misc = case.intermediates_meta["misc"]
    torch.testing.assert_close(
        inst.online_scores,
        torch.tensor(misc[f"v{video}.online_seq_scores_for_offline_topk"]),
        atol=1e-5,
        rtol=0,
    )
    rows = misc[f"v{video}.common_inference.instances"]
    assert inst.kinds == [r["kind"] for r in rows]
    assert inst.sequence_ids == [r["seq"] if r["kind"] == TRACKED else -1 for r in rows]
    assert inst.minvis_rows == [r.get("minvis_query_row", -1) for r in rows]
    assert [i for i, r in zip(inst.official_ids, rows) if r["kind"] == NAIVE_LINK] == [
        r["official_id"] for r in rows if r["kind"] == NAIVE_LINK
    ]
    assert len(inst) == model.tracker.num_new_ins

    # the refiner on the model's own inputs: logits fed to inference_video_vis and every row's masks
    with torch.no_grad():
        refined = model.run_refiner(vin, feats, inst)
        masks = model.decode_masks(refined, feats, torch.arange(len(inst)))
    assert refined["pred_masks"] is None  # not decoded for all rows by default
    assert model.capture_context.stage == "refiner"
    assert_close_ref(
        refined["pred_logits"][0, 0], case.intermediates[f"v{video}.video_inference_input.pred_cls"], "cls"
    )
    assert_close_ref(masks, case.intermediates[f"v{video}.refiner.output.pred_masks"][0], "masks")
    assert masks.dtype == torch.float32


def test_refiner_attention_and_pooling_captured_in_the_full_model(model, case):
    """Every refiner site fires once, in the refiner stage, with the golden weights (v0 and v1)."""
    for video in (0, 1):
        plain = run(model, case, video)
        got, row_seq_ids = {}, []

        def sink(site, tensors, got=got, row_seq_ids=row_seq_ids):
            if site.site_name.startswith("refiner."):
                ctx = model.capture_context
                assert ctx.stage == "refiner" and ctx.tracker_frame == -1
                row_seq_ids.append(list(ctx.tracker_row_seq_ids))
                got[site.site_name] = tensors["weights"]

        enable_capture(capture_sites(model), sink)
        try:
            captured, info = run_traced(model, case, video)
        finally:
            disable_capture(model)
        assert row_seq_ids and all(ids == info.sequence_ids for ids in row_seq_ids)
        assert_outputs_match(captured, case, video, "captured")
        assert captured["pred_labels"] == plain["pred_labels"] and captured["pred_ids"] == plain["pred_ids"]
        torch.testing.assert_close(
            torch.tensor(captured["pred_scores"]), torch.tensor(plain["pred_scores"]), atol=1e-5, rtol=0
        )
        assert len(got) == 3 * case.cfg.MODEL.REFINER.DECODER_LAYERS + 1
        for name, weights in got.items():
            if name == "refiner.activation_proj":
                ref = case.intermediates[f"v{video}.refiner.activation_proj.softmax_over_time"]
            else:
                ref = case.intermediates[f"v{video}.attn.{name}.call0"]
            torch.testing.assert_close(weights, ref, atol=ATTN_ATOL, rtol=0, msg=name)


def test_inference_trace(model, case):
    misc = case.intermediates_meta["misc"]
    for video in (0, 1):
        out, info = run_traced(model, case, video)
        assert isinstance(info, OfflineInferenceTrace)
        rows = misc[f"v{video}.instance_rows"]
        n, t = len(rows), info.num_frames
        assert info.refiner_ids == list(range(n))
        assert info.sequence_ids == [r["seq"] if r["kind"] == TRACKED else -1 for r in rows]
        assert info.row_seq_ids == info.sequence_ids
        assert info.kinds == [r["kind"] for r in rows]
        assert list(info.image_size) == misc[f"v{video}.video_inference_input"]["img_size"]
        assert list(info.padded_size) == misc[f"v{video}.video_inference_input"]["first_resize_size"]
        # pooling weights of every refiner row: the golden softmax over time, (N, T), rows sum to 1
        soft = case.intermediates[f"v{video}.refiner.activation_proj.softmax_over_time"][0, 0, :, :, 0].T
        assert info.pooling_weights.shape == (n, t) and info.pooling_weights.device.type == "cpu"
        torch.testing.assert_close(info.pooling_weights, soft, atol=1e-6, rtol=0)
        assert info.present.shape == (n, t) and bool(info.present.all())  # golden: no padded frames
        # one source per prediction, in output order
        assert [p.row for p in info.predictions] == out["pred_ids"]
        trace = [s for s in case.intermediates_meta["tracker_trace"] if s["video"] == video]
        hub = {h["seq"]: h for h in trace[-1]["hub"]}
        for p in info.predictions:
            assert p.refiner_id == p.row and p.kind == info.kinds[p.row]
            assert p.pooling_weights == info.pooling_weights[p.row].tolist()
            if p.kind == TRACKED:
                assert p.seq_id == info.sequence_ids[p.row] >= 0 and p.official_id == p.seq_id
                assert p.start_frame == hub[p.seq_id]["start_frame"]
                assert p.appearance == hub[p.seq_id]["appearance"]
            else:
                assert p.seq_id == -1 and (p.start_frame, p.end_frame) == (0, t)
                assert p.official_id == (10000 + 0) * 10000 + (p.row - info.kinds.count(TRACKED) + 1) * 1000
        assert {p.kind for p in info.predictions} == {TRACKED, NAIVE_LINK}  # the golden keeps both kinds


def test_sequences_starting_late_are_padded_with_their_fused_position(case):
    """A 14-frame video (v0 forward then backward), all sequences kept: frames a sequence did not
    store are padded (mask True) and hold its final similarity-guided position."""
    model = _build(_cfg(case, MODEL__VIDEO_HEAD__OFFLINE_TOPK_NUM=40), case.state_dict)
    item = case.batched_inputs(0)[0]
    item = dict(item, image=item["image"] + item["image"][::-1])
    vin = VideoInput.from_batched_inputs([item], model.size_divisibility)
    with torch.no_grad():
        _, inst = model.common_inference(vin)
    padded_rows = [r for r in range(len(inst)) if bool(inst.padding[r].any())]
    assert padded_rows and all(k == TRACKED for k in inst.kinds[: len(padded_rows)])
    for r in padded_rows:
        src = inst.sources[r]
        expected = torch.ones(vin.num_frames, dtype=torch.bool)
        expected[src.start_frame : src.end_frame] = False
        assert torch.equal(inst.padding[r], expected)
        fused = model.tracker.memory.final_pos[inst.sequence_ids[r]]
        torch.testing.assert_close(
            inst.embeds[r][inst.padding[r]], fused.expand(int(inst.padding[r].sum()), -1)
        )
    with torch.no_grad():
        out, info = model.run_with_trace([item])
    assert len(out["pred_scores"]) == case.cfg.MODEL.MASK_FORMER.TEST.MAX_NUM
    assert bool((~info.present).any())


def test_mask_features_on_the_host_give_the_same_outputs(case):
    model = _build(case.cfg, case.state_dict)
    model.mask_feature_device = "cpu"
    vin = VideoInput.from_batched_inputs(case.batched_inputs(0), model.size_divisibility)
    with torch.no_grad():
        feats, _ = model.common_inference(vin)
    assert feats.mask_features.device.type == "cpu"
    assert_outputs_match(run(model, case, 0), case, 0, "host mask features")


def test_only_naive_links_and_the_single_instance_quirk(case):
    """OFFLINE_TOPK_NUM 0: every refiner row is a naive link; with NUM_NEW_INS 1 the official code
    returns an empty result (a single refiner instance)."""
    model = _build(_cfg(case, MODEL__VIDEO_HEAD__OFFLINE_TOPK_NUM=0), case.state_dict)
    out, info = run_traced(model, case, 1)
    assert info.kinds == [NAIVE_LINK] * 10 and info.sequence_ids == [-1] * 10
    assert info.official_ids == [100000000 + j * 1000 for j in range(1, 11)]
    assert sorted(info.minvis_rows) == list(range(10))  # all chains, in topk order
    assert len(out["pred_scores"]) == case.cfg.MODEL.MASK_FORMER.TEST.MAX_NUM

    single = _build(
        _cfg(case, MODEL__VIDEO_HEAD__OFFLINE_TOPK_NUM=0, MODEL__VIDEO_HEAD__NUM_NEW_INS=1), case.state_dict
    )
    out, info = run_traced(single, case, 1)
    assert out["pred_scores"] == [] and out["pred_masks"] == []
    assert tuple(out["image_size"]) == tuple(case.inputs["v1.image_mapper_uint8_TCHW"].shape[-2:])
    assert info.pooling_weights is None


def test_official_topk():
    scores = torch.tensor([0.3, 0.2, 0.9, 0.5, 0.1])
    assert official_topk(scores, 6).tolist() == [0, 1, 2, 3, 4]
    assert sorted(official_topk(scores, 2).tolist()) == [2, 3]
    assert sorted(official_topk(scores, 5).tolist()) == [0, 1, 2, 3, 4]  # k == n goes through topk
    assert official_topk(scores, 0).numel() == 0


def test_bad_config_is_a_one_line_error(case):
    with pytest.raises(ValueError, match="OFFLINE_TOPK_NUM"):
        DVISDAQOffline(_cfg(case, MODEL__VIDEO_HEAD__OFFLINE_TOPK_NUM=-1))


# ---------------------------------------------------------------------------------------- fish-dvis


def test_fish_dvis_case_matches_golden():
    """ViT-Adapter, one 7-frame window (TEST.WINDOW_SIZE 100), tracker ``forward_offline_mode``,
    NUM_NEW_INS 5 < 20 queries; all online sequences go to the refiner (fewer than the top-k)."""
    fish = golden_case("vitadapter_offline_tiny")
    cfg = golden_config(fish)
    cfg.MODEL.COMPAT = "fish-dvis"
    model = _build(cfg, fish.state_dict)
    assert model.fish_compat and model.window_size == 100
    misc = fish.intermediates_meta["misc"]
    for video in (0, 1):
        out, info = run_traced(model, fish, video)
        assert_outputs_match(out, fish, video, f"fish v{video}")
        rows = misc[f"v{video}.common_inference.instances"]
        assert info.kinds == [r["kind"] for r in rows]
        assert info.sequence_ids == [r["seq"] for r in rows]
