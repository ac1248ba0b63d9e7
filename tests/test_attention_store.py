"""AttentionStore: atomic safetensors files + manifest parts from a background thread, error
surfacing, and a merged manifest that does not depend on how many processes wrote the parts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from callbacks import AttentionStore, AttentionStoreError, build_capture_callbacks, merge_manifest
from callbacks.attention_store import METADATA_KEY
from tests.attention_helpers import run_test, sha256, synthetic_videos, tiny_model


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "weights": torch.rand(3, 4, 5, generator=g),
        "frame": torch.arange(3),
        "present": torch.tensor([[True, False], [True, True], [False, True]]),
    }


def test_files_are_fp16_checksummed_and_listed_in_the_part(tmp_path):
    store = AttentionStore(tmp_path)
    t = _tensors()
    store.put(3, "video_3/refiner_time.safetensors", t, {"kind": "refiner_time", "sites": ["a.0.b"]})
    store.put(3, "rolled_out/video_3.safetensors", {"rollout": torch.eye(3)}, {"kind": "rollout"})
    store.flush()
    assert store.completed_videos() == set()  # the part appears only after finish_video
    store.finish_video(3, {"num_frames": 2})
    store.close()
    loaded = load_file(str(tmp_path / "video_3/refiner_time.safetensors"))
    assert loaded["weights"].dtype == torch.float16 and loaded["frame"].dtype == torch.int64
    torch.testing.assert_close(loaded["weights"].float(), t["weights"], atol=1e-3, rtol=0)
    assert torch.equal(loaded["present"], t["present"])
    with safe_open(str(tmp_path / "video_3/refiner_time.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    assert header["meta"] == {"kind": "refiner_time", "sites": ["a.0.b"]} and header["video_id"] == 3
    part = json.loads((tmp_path / "video_3/manifest.json").read_text())
    assert part["video_id"] == 3 and part["num_frames"] == 2
    assert [a["path"] for a in part["artifacts"]] == [
        "rolled_out/video_3.safetensors",
        "video_3/refiner_time.safetensors",
    ]
    for art in part["artifacts"]:
        assert art["sha256"] == sha256(tmp_path / art["path"])
    entry = part["artifacts"][1]
    assert entry["tensors"]["weights"] == {"shape": [3, 4, 5], "dtype": "F16"}
    assert entry["tensors"]["present"]["dtype"] == "BOOL" and entry["kind"] == "refiner_time"
    assert store.completed_videos() == {"3"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_float_dtype_none_keeps_float32(tmp_path):
    with_store = AttentionStore(tmp_path, float_dtype=None)
    with_store.put("a", "video_a/x.safetensors", _tensors(), {})
    with_store.close()
    assert load_file(str(tmp_path / "video_a/x.safetensors"))["weights"].dtype == torch.float32


def test_writer_error_surfaces_on_the_main_thread(tmp_path):
    (tmp_path / "video_1").write_text("a file where the video folder should be")
    store = AttentionStore(tmp_path)
    store.put(1, "video_1/refiner_time.safetensors", _tensors(), {})  # fails in the writer thread
    with pytest.raises(AttentionStoreError, match="video_1/refiner_time.safetensors"):
        store.flush()
    with pytest.raises(AttentionStoreError):
        store.put(2, "video_2/refiner_time.safetensors", _tensors(), {})
    with pytest.raises(AttentionStoreError):
        store.close()
    assert not (tmp_path / "video_2").exists()  # nothing written after the failure

    other = AttentionStore(tmp_path / "second")
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / "video_5").write_text("blocked")
    other.put(5, "video_5/a.safetensors", _tensors(), {})
    with pytest.raises(AttentionStoreError, match="NotADirectoryError|FileExistsError"):
        other.close()  # the error reaches the caller at close as well


def test_put_rejects_bad_input(tmp_path):
    store = AttentionStore(tmp_path)
    with pytest.raises(ValueError, match="inside"):
        store.put(1, "../escape.safetensors", _tensors(), {})
    with pytest.raises(ValueError, match="not the host"):
        store.put(1, "video_1/x.safetensors", {"w": torch.empty(2, device="meta")}, {})
    store.close()
    with pytest.raises(AttentionStoreError, match="closed"):
        store.put(1, "video_1/x.safetensors", _tensors(), {})
    with pytest.raises(ValueError, match="queue_size"):
        AttentionStore(tmp_path, queue_size=0)


def _write(root, video_ids, seed_of):
    store = AttentionStore(root, queue_size=1)
    for vid in video_ids:
        store.put(vid, f"video_{vid}/k.safetensors", _tensors(seed_of[vid]), {"kind": "k"})
        store.finish_video(vid, {"device_buffer_bytes": 10 * seed_of[vid]})
    store.close()


def test_merge_is_the_same_for_any_split_of_videos(tmp_path):
    ids = [0, 1, 2, 10, "b", "a"]
    seed_of = {v: i for i, v in enumerate(ids)}
    _write(tmp_path / "one", ids, seed_of)
    _write(tmp_path / "split", [10, "a", 0], seed_of)  # "rank 0"
    _write(tmp_path / "split", ["b", 2, 1], seed_of)  # "rank 1"
    one = merge_manifest(tmp_path / "one", {"preset": "x"})
    merge_manifest(tmp_path / "split", {"preset": "x"})
    assert one["complete_videos"] == [0, 1, 2, 10, "a", "b"]
    assert one["device_buffer_bytes_peak"] == 50 and one["num_artifacts"] == 6
    assert (tmp_path / "one/manifest.json").read_bytes() == (tmp_path / "split/manifest.json").read_bytes()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_trainer_runs_split_over_processes_merge_to_the_single_run_manifest(tiny, tmp_path):
    cfg, model = tiny
    videos = synthetic_videos(3)
    run_test(cfg, model, videos, build_capture_callbacks("temporal", tmp_path / "single"), keep=False)
    # two runs sharing a run directory, each writing only its videos' parts, as DDP ranks do
    run_test(cfg, model, videos[1:], build_capture_callbacks("temporal", tmp_path / "split"), keep=False)
    run_test(cfg, model, videos[:1], build_capture_callbacks("temporal", tmp_path / "split"), keep=False)
    single = (tmp_path / "single/attention_maps/manifest.json").read_bytes()
    assert json.loads(single)["complete_videos"] == [0, 1, 2]
    assert single == (tmp_path / "split/attention_maps/manifest.json").read_bytes()


def test_writer_failure_in_a_run_stops_it_with_a_clear_error(tiny, tmp_path):
    cfg, model = tiny
    (tmp_path / "attention_maps").mkdir()
    (tmp_path / "attention_maps" / "video_0").write_text("blocked")
    with pytest.raises(AttentionStoreError, match="video_0"):
        run_test(cfg, model, synthetic_videos(2), build_capture_callbacks("temporal", tmp_path), keep=False)
