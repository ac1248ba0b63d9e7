"""The predict/test loop overlaps the model: frames decoded in DataLoader workers, result records
encoded and written on background threads, no model move after the loop."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future

import pytest
import torch
from torch import nn

from callbacks.prediction_writer import PredictionWriter
from dvis_attn_pl.cli import build_parser
from dvis_attn_pl.data.datamodule import YTVISDataModule, default_num_workers
from dvis_attn_pl.data.dataset import YTVISVideoDataset
from dvis_attn_pl.lightning_module import DVISDAQModule, VideoResult


def _result(video_id: int, records) -> VideoResult:
    return VideoResult(video_id, 1, {}, records, [], {"num_frames": 1})


def test_records_future_is_waited_for_and_metric_keeps_video_order():
    seen = []

    class Metric(nn.Module):
        def update(self, records, video):
            seen.append((records, video["video_id"]))

    module = DVISDAQModule(nn.Linear(1, 1), [1], metric=Metric())
    late, early = Future(), Future()
    early.set_result([{"id": 2}])
    module._metric_pending = [(_result(1, late), {"video_id": 1}), (_result(2, early), {"video_id": 2})]
    module._update_metric(wait=False)
    assert seen == []  # video 2 is ready but video 1 is not: order is kept
    threading.Timer(0.05, late.set_result, args=([{"id": 1}],)).start()
    module._update_metric(wait=True)
    assert seen == [([{"id": 1}], 1), ([{"id": 2}], 2)]


def test_parts_are_written_in_the_background_and_failures_surface(tmp_path):
    writer = PredictionWriter(tmp_path)
    pending = Future()
    writer._write(_result(7, pending))
    assert not writer.part_path(7).exists() or pending.done()
    pending.set_result([{"video_id": 7, "score": 0.5}])
    writer._drain(wait=True)
    assert json.loads(writer.part_path(7).read_text())["records"] == [{"video_id": 7, "score": 0.5}]
    broken = Future()
    broken.set_exception(OSError("disk full"))
    writer._write(_result(8, broken))
    with pytest.raises(OSError, match="disk full"):
        writer._drain(wait=True)


def test_no_model_move_after_the_loop():
    module = DVISDAQModule(nn.Linear(2, 2), [1]).to("meta")
    module.on_predict_start()
    module.on_predict_end()
    assert module.cpu() is module and module.model.weight.is_meta  # a move would fail on meta tensors
    module.on_test_start()
    with pytest.raises(NotImplementedError):
        module.cpu()


def test_workers_decode_whole_videos_ahead(tmp_path):
    frames = torch.randint(0, 255, (3, 16, 24, 3), dtype=torch.uint8)
    dataset = YTVISVideoDataset.from_arrays([{"video_id": 1, "frames": frames}], eager=True)
    loader = YTVISDataModule(dataset=dataset, num_workers=1).predict_dataloader()
    assert loader.num_workers == 1 and loader.prefetch_factor == 2
    (item,) = next(iter(loader))
    assert isinstance(item["image"], list) and len(item["image"]) == 3
    assert all(isinstance(f, torch.Tensor) and f.dtype == torch.uint8 for f in item["image"])
    args = build_parser().parse_args(["predict", "--num-workers", "0"])
    assert args.num_workers == 0
    assert build_parser().parse_args(["predict"]).num_workers is None
    assert 0 <= default_num_workers() <= 4
