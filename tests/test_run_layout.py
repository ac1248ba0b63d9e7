"""The run directory's one owner (utils/run_layout): names, the video order, run.json as RunInfo."""

from __future__ import annotations

import json

import numpy as np

from dvis_attn_pl.utils.run_layout import FORMAT_VERSION, RunInfo, RunLayout, video_sort_key


def test_one_video_order_for_every_writer_and_reader():
    ids = ["b", 10, np.int64(2), "a", 1]
    assert sorted(ids, key=video_sort_key) == [1, 2, 10, "a", "b"]


def test_layout_names():
    layout = RunLayout("/r")
    assert layout.part(3).as_posix() == "/r/inference/parts/3.json"
    assert layout.video_attention_part(3).as_posix() == "/r/attention_maps/video_3/manifest.json"
    assert layout.rollout.as_posix() == "/r/attention_maps/rolled_out"
    assert layout.intervention("shuffle_1").results_temporal.as_posix() == (
        "/r/interventions/shuffle_1/inference/results_temporal.json")


def test_run_info_round_trip(tmp_path):
    info = RunInfo(command="test", argv=["test"], status="running", data="/d/valid.json", frames="/d/JPEGImages",
                   checkpoint=None, weights="random", random_weights=True, fingerprint={"command": "test"})
    info.write(RunLayout(tmp_path))
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["format"] == FORMAT_VERSION and doc["status"] == "running"
    assert RunInfo.from_json(doc) == info


def test_a_run_json_of_an_older_version_stays_readable():
    started = {"command": "test", "argv": ["test", "--data", "v.json", "--frames", "/f"], "status": "running",
               "fingerprint": {"command": "test"}}
    info = RunInfo.from_json(started)
    assert info.frames == "/f" and info.format == 0 and info.data is None
    assert RunInfo.from_json({**started, "argv": ["test", "--frames=/g"]}).frames == "/g"
    done = {**started, "status": "complete", "frames": "/h", "random_weights": False}
    assert RunInfo.from_json(done).frames == "/h" and RunInfo.from_json(done).random_weights is False
