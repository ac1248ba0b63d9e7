"""AttentionCapture on the real tiny model driven by a Lightning Trainer: site selection, what is
kept (rows, ids, padding marks, decoder maps), files vs manifest, memory, and no effect on outputs."""

from __future__ import annotations

import lightning as L
import psutil
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from callbacks import AttentionCapture, build_capture_callbacks
from callbacks.attention_capture import CaptureBudgetError, batched_to_host
from dvis_attn_pl.capture_presets import PRESETS, get_preset, resolve_selection
from dvis_attn_pl.config import config_path, load_config
from dvis_attn_pl.lightning_module import DVISDAQModule
from dvis_attn_pl.model.build import build_model
from dvis_attn_pl.model.capture import KINDS, capture_sites
from tests.attention_helpers import (
    artifact,
    artifact_meta,
    load_manifest,
    run_test,
    same_outputs,
    sha256,
    synthetic_videos,
    tiny_model,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def videos():
    return synthetic_videos(3)


@pytest.fixture(scope="module")
def temporal_run(tiny, videos, tmp_path_factory):
    cfg, model = tiny
    run_dir = tmp_path_factory.mktemp("temporal")
    collect = run_test(cfg, model, videos, build_capture_callbacks("temporal", run_dir))
    return run_dir, collect


@pytest.fixture(scope="module")
def decoder_run(tiny, videos, tmp_path_factory):
    cfg, model = tiny
    run_dir = tmp_path_factory.mktemp("decoder")
    cbs = build_capture_callbacks("decoder", run_dir, instances="all", decoder_raw=True, rollout=False)
    return run_dir, run_test(cfg, model, videos, cbs)


# ----------------------------------------------------------------------------- selection
def test_presets_select_the_documented_kinds(tiny):
    _, model = tiny
    present_kinds = {s.site_kind for s in capture_sites(model)}
    assert build_capture_callbacks("none", "unused") == []
    for name in ("temporal", "decoder", "all"):
        cap = AttentionCapture(None, preset=name)
        cap.attach(model)
        got = {s.site_kind for s in cap.sites}
        assert got == set(get_preset(name).kinds) & present_kinds, name
    assert set(PRESETS["temporal"].kinds) == {"refiner_time", "activation", "tracker_cross"}
    assert "decoder_cross" in PRESETS["decoder"].kinds and set(PRESETS["all"].kinds) == set(KINDS)


def test_glob_and_kind_selection(tiny):
    _, model = tiny
    cap = AttentionCapture(None, preset=None, patterns=["tracker.transformer_cross_attention_layers.1.*"])
    cap.attach(model)
    assert [s.site_name for s in cap.sites] == ["tracker.transformer_cross_attention_layers.1.multihead_attn"]
    cap = AttentionCapture(None, preset=None, kinds=["refiner_obj"])
    cap.attach(model)
    assert {s.site_kind for s in cap.sites} == {"refiner_obj"} and len(cap.sites) == 2
    # decoder maps are weighted by tracker rows, so decoder_cross brings tracker_cross along
    assert resolve_selection(None, ["decoder_cross"])[0] == ("decoder_cross", "tracker_cross")
    with pytest.raises(ValueError, match="unknown capture preset"):
        build_capture_callbacks("everything", "unused")
    with pytest.raises(ValueError, match="unknown attention kind"):
        AttentionCapture(None, kinds=["decoder_crosss"])
    with pytest.raises(ValueError, match="instances"):
        AttentionCapture(None, instances="some")


# ----------------------------------------------------------------------------- predictions unchanged
def test_capture_does_not_change_predictions(tiny, videos, tmp_path):
    cfg, model = tiny
    plain = run_test(cfg, model, videos, [])
    captured = run_test(cfg, model, videos, build_capture_callbacks("all", tmp_path, per_head=True))
    assert len(plain.results) == len(videos)
    for vid, result in plain.results.items():
        assert result.outputs["pred_scores"], "the tiny model should predict something"
        assert same_outputs(result.outputs, captured.results[vid].outputs), vid
    assert all(s.capture is None for s in capture_sites(model))  # switched off after the run


# ----------------------------------------------------------------------------- files and manifest
def test_manifest_lists_every_file_with_checksum_shape_dtype(temporal_run, videos):
    run_dir, _ = temporal_run
    manifest = load_manifest(run_dir)
    assert manifest["complete_videos"] == [v["video_id"] for v in videos]
    assert manifest["capture"]["preset"] == "temporal" and manifest["capture"]["dtype"] == "float16"
    on_disk = {
        p.relative_to(run_dir / "attention_maps").as_posix()
        for p in (run_dir / "attention_maps").rglob("*.safetensors")
    }
    listed = set()
    for vid, entry in manifest["videos"].items():
        paths = {a["path"] for a in entry["artifacts"]}
        assert paths == {
            f"video_{vid}/refiner_time.safetensors",
            f"video_{vid}/activation.safetensors",
            f"video_{vid}/tracker_cross.safetensors",
            f"rolled_out/video_{vid}.safetensors",
        }
        assert entry["device_buffer_bytes"] > 0
        for art in entry["artifacts"]:
            listed.add(art["path"])
            path = run_dir / "attention_maps" / art["path"]
            assert sha256(path) == art["sha256"] and path.stat().st_size == art["bytes"]
            tensors = artifact(run_dir, art["path"])
            assert set(tensors) == set(art["tensors"])
            for name, t in tensors.items():
                assert list(t.shape) == art["tensors"][name]["shape"]
                if t.is_floating_point():
                    assert t.dtype == torch.float16 and art["tensors"][name]["dtype"] == "F16"
            header = artifact_meta(run_dir, art["path"])
            assert header["video_id"] == int(vid) and header["meta"]["kind"] == art["kind"]
            assert art["video_id"] == int(vid) and art["frame_range"] == [0, entry["num_frames"]]
    assert listed == on_disk
    assert manifest["device_buffer_bytes_peak"] == max(
        e["device_buffer_bytes"] for e in manifest["videos"].values()
    )
    assert not list((run_dir / "attention_maps").rglob("*.tmp"))


def test_rows_ids_and_padding_marks_follow_the_model(temporal_run):
    run_dir, collect = temporal_run
    saw_padding = False
    for vid, result in collect.results.items():
        info, out = result.info, result.outputs
        rows = list(dict.fromkeys(out["pred_ids"]))
        ref = artifact(run_dir, f"video_{vid}/refiner_time.safetensors")
        assert ref["instance_row"].tolist() == rows
        assert ref["refiner_id"].tolist() == [info.refiner_ids[r] for r in rows]
        assert ref["sequence_id"].tolist() == [info.sequence_ids[r] for r in rows]
        assert torch.equal(ref["present"], info.present[rows])
        saw_padding |= bool((~ref["present"]).any())
        t = result.num_frames
        assert ref["weights"].shape == (len(rows), 2, t, t)
        torch.testing.assert_close(
            ref["weights"].float().sum(-1), torch.ones(len(rows), 2, t), atol=5e-3, rtol=0
        )
        # the pooling weights equal what the model itself reports
        act = artifact(run_dir, f"video_{vid}/activation.safetensors")
        torch.testing.assert_close(act["weights"].float(), info.pooling_weights[rows], atol=1e-3, rtol=1e-3)

        trk = artifact(run_dir, f"video_{vid}/tracker_cross.safetensors")
        after = dict(info.tracker_rows)
        kept = {s for s in ref["sequence_id"].tolist() if s >= 0}
        assert set(trk["sequence_id"].tolist()) <= kept
        refiner_of = {info.sequence_ids[r]: info.refiner_ids[r] for r in range(len(info.sequence_ids))}
        for f, r, s, rid in zip(*(trk[k].tolist() for k in ("frame", "row", "sequence_id", "refiner_id"))):
            if after[f][r] >= 0:
                assert after[f][r] == s  # the tracker's own decision for that row
            assert rid == refiner_of[s]
        for i, s in enumerate(ref["sequence_id"].tolist()):
            if s < 0:
                continue
            frames_with_row = set(trk["frame"][trk["sequence_id"] == s].tolist())
            assert set(torch.nonzero(ref["present"][i]).flatten().tolist()) <= frames_with_row
            assert len(frames_with_row) == int((trk["sequence_id"] == s).sum())  # one row per frame
        assert trk["weights"].shape[:2] == (2, len(trk["frame"]))
    assert saw_padding, "some kept instance should start after frame 0 in these videos"


def test_decoder_maps_are_tracker_weighted_sums(decoder_run):
    run_dir, collect = decoder_run
    for vid, result in collect.results.items():
        dec = artifact(run_dir, f"video_{vid}/decoder_cross.safetensors")
        trk = artifact(run_dir, f"video_{vid}/tracker_cross.safetensors")
        out = result.outputs
        first5 = list(dict.fromkeys(out["pred_ids"][:5]))
        assert dec["instance_row"].tolist() == first5  # map_top_k = 5 for the decoder preset
        t = result.num_frames
        assert dec["frames"].tolist() == list(range(t))
        h, w = result.info.padded_size
        for layer, stride in ((0, 32), (1, 16), (2, 8)):
            maps, raw = dec[f"layer{layer}.maps"].float(), dec[f"layer{layer}.raw"].float()
            assert maps.shape == (len(first5), t, h // stride, w // stride)
            assert raw.shape[0] == t and raw.shape[2:] == (h // stride, w // stride)
            for i, s in enumerate(dec["sequence_id"].tolist()):
                for f in range(t):
                    sel = (trk["sequence_id"] == s) & (trk["frame"] == f)
                    if s < 0 or not sel.any():
                        assert not dec["weighted"][i, f] and maps[i, f].abs().max() == 0
                        continue
                    weights = trk["weights"][-1][sel][0].float()  # last tracker layer
                    expected = torch.einsum("q,qyx->yx", weights, raw[f])
                    torch.testing.assert_close(maps[i, f], expected, atol=2e-3, rtol=2e-2)
                    assert dec["weighted"][i, f]
        assert dec["weighted"].any()


# ----------------------------------------------------------------------------- options
def test_frames_top_k_and_dtype_options(tiny, tmp_path):
    cfg, model = tiny
    video = synthetic_videos(1, frames=(7,))
    cbs = build_capture_callbacks("decoder", tmp_path, frames=[0, 3, 6], top_k=2, dtype="float32")
    result = run_test(cfg, model, video, cbs).results[0]
    rows = list(dict.fromkeys(result.outputs["pred_ids"][:2]))
    ref = artifact(tmp_path, "video_0/refiner_time.safetensors")
    assert ref["instance_row"].tolist() == rows and ref["weights"].dtype == torch.float32
    assert ref["weights"].shape[-1] == 7  # the refiner's time attention always spans the video
    trk = artifact(tmp_path, "video_0/tracker_cross.safetensors")
    assert set(trk["frame"].tolist()) <= {0, 3, 6}
    dec = artifact(tmp_path, "video_0/decoder_cross.safetensors")
    assert dec["frames"].tolist() == [0, 3, 6] and dec["layer2.maps"].shape[1] == 3
    assert load_manifest(tmp_path)["capture"]["frames"] == [0, 3, 6]


def test_per_head_capture_averages_to_the_head_mean(tiny, temporal_run, tmp_path):
    cfg, model = tiny
    video = synthetic_videos(1)
    run_test(cfg, model, video, build_capture_callbacks("temporal", tmp_path, per_head=True))
    per_head = artifact(tmp_path, "video_0/refiner_time.safetensors")["weights"].float()
    averaged = artifact(temporal_run[0], "video_0/refiner_time.safetensors")["weights"].float()
    heads = int(cfg.MODEL.MASK_FORMER.NHEADS)
    assert per_head.shape == (averaged.shape[0], averaged.shape[1], heads, *averaged.shape[2:])
    torch.testing.assert_close(per_head.mean(dim=2), averaged, atol=2e-3, rtol=0)
    trk = artifact(tmp_path, "video_0/tracker_cross.safetensors")["weights"]
    assert trk.dim() == 4 and trk.shape[2] == heads


def test_buffer_budget_raises_and_leaves_capture_off(tiny, tmp_path):
    cfg, model = tiny
    cbs = build_capture_callbacks("all", tmp_path, max_buffer_bytes=1000)
    with pytest.raises(CaptureBudgetError, match="limit 1000"):
        run_test(cfg, model, synthetic_videos(1), cbs)
    assert all(s.capture is None for s in capture_sites(model))


def test_batched_to_host_one_copy_per_dtype():
    t = {"a": torch.rand(2, 3), "b": torch.arange(4), "c": torch.rand(5, dtype=torch.float64)}
    host, _ = batched_to_host(t, torch.float16)
    assert (
        host["a"].dtype == torch.float16
        and host["c"].dtype == torch.float16
        and host["b"].dtype == torch.int64
    )
    torch.testing.assert_close(host["a"].float(), t["a"], atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- memory
class _RSS(Callback):
    def __init__(self) -> None:
        self.rss: list[int] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.rss.append(psutil.Process().memory_info().rss)


@pytest.mark.slow
def test_host_memory_stays_flat_over_videos(tiny, tmp_path):
    cfg, model = tiny
    rss = _RSS()
    cbs = build_capture_callbacks("all", tmp_path)
    run_test(cfg, model, synthetic_videos(20, seed=3), [*cbs, rss], keep=False)
    assert len(rss.rss) == 20
    warm = max(rss.rss[4:9])
    late = max(rss.rss[15:])
    # every video keeps ~100 kB of attention; 20 videos accumulating would add megabytes of tensors
    assert late - warm < 12 * 2**20, [round(r / 2**20, 1) for r in rss.rss]
    capture = cbs[0]
    assert capture.last_video is None and capture.frames_total == sum(
        len(v["image"]) for v in synthetic_videos(20, seed=3)
    )


# ----------------------------------------------------------------------------- other loops and models
def test_predict_loop_writes_the_same_files(tiny, temporal_run, tmp_path):
    cfg, model = tiny
    module = DVISDAQModule(model, list(range(1, int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) + 1)))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=build_capture_callbacks("temporal", tmp_path),
    )
    loader = DataLoader(synthetic_videos(3), batch_size=1, collate_fn=lambda b: b)
    trainer.predict(module, loader, return_predictions=False)
    assert (tmp_path / "attention_maps/manifest.json").read_bytes() == (
        temporal_run[0] / "attention_maps/manifest.json"
    ).read_bytes()


def test_online_model_keeps_tracker_rows_without_refiner(tmp_path):
    cfg = load_config(config_path("tiny_cpu"), overrides=["MODEL.META_ARCHITECTURE", "DVIS_DAQ_online"])
    torch.manual_seed(0)
    model = build_model(cfg)
    cbs = build_capture_callbacks("temporal", tmp_path)
    result = run_test(cfg, model, synthetic_videos(1), cbs).results[0]
    manifest = load_manifest(tmp_path)
    assert set(manifest["capture"]["missing_kinds"]) == {"refiner_time", "activation"}
    assert [a["path"] for a in manifest["videos"]["0"]["artifacts"]] == ["video_0/tracker_cross.safetensors"]
    trk = artifact(tmp_path, "video_0/tracker_cross.safetensors")
    seqs = {p.seq_id for p in result.info.predictions}
    assert set(trk["sequence_id"].tolist()) == seqs and (trk["refiner_id"] == -1).all()
    present = {i["sequence_id"]: i["present_frames"] for i in manifest["videos"]["0"]["instances"]}
    for p in result.info.predictions:
        assert present[p.seq_id] == list(range(p.start_frame, p.end_frame))


def test_callbacks_can_be_reused_for_a_second_loop(tiny, tmp_path):
    cfg, model = tiny
    cbs = build_capture_callbacks("temporal", tmp_path)
    run_test(cfg, model, synthetic_videos(1), cbs, keep=False)
    run_test(cfg, model, synthetic_videos(2)[1:], cbs, keep=False)
    assert load_manifest(tmp_path)["complete_videos"] == [0, 1]
    assert (tmp_path / "attention_maps/rolled_out/video_1.safetensors").is_file()


def test_a_registered_reducer_decides_what_its_kind_keeps(tiny, monkeypatch, tmp_path):
    """The per-kind registry: a kind's entry is what runs (here a stand-in for tracker_self that
    keeps one count per call); kinds without an entry keep their raw tensors."""
    from callbacks.attention_reduce import REDUCERS, KindResult

    def count_calls(kind, calls, request):
        return KindResult(kind, {"calls": torch.tensor([len(calls)])}, {**request.video_meta, "kind": kind})

    monkeypatch.setitem(REDUCERS, "tracker_self", count_calls)
    cfg, model = tiny
    capture = AttentionCapture(tmp_path, preset=None, kinds=["tracker_self", "slot_attn"])
    run_test(cfg, model, synthetic_videos(1), [capture], keep=False)
    kept = artifact(tmp_path, "video_0/tracker_self.safetensors")
    num_frames = capture.frames_total
    layers = len([s for s in capture.sites if s.site_kind == "tracker_self"])
    assert list(kept) == ["calls"] and int(kept["calls"]) == num_frames * layers
    raw = artifact(tmp_path, "video_0/slot_attn.safetensors")
    assert any("/weights" in name for name in raw)
