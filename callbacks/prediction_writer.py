"""PredictionWriter: per-video result files, merged on rank 0 into the run's ``inference/`` files.

Every rank writes one small JSON part per finished video (``inference/parts/<video_id>.json``,
written atomically); at the end of the loop rank 0 merges all parts, in video-id order, into

- ``results.json``: YTVIS result records (dataset category ids), the official format;
- ``results_temporal.json``: each record plus its refiner id, tracker sequence id, the frames where
  the instance is present, and the class posterior as frames accumulate;
- ``results_temporal_summary.json``: refiner ids overall and per video;
- ``image_dimensions.json``: per video the original, resized and padded sizes and feature grids.

Because parts are keyed by video and merged in a fixed order, a run on N processes writes the
same files as a run on one, and a resumed run can tell which videos are complete. Parts are
written on a background thread (their records may still be encoding), so the next video starts at
once; the loop's end waits for every part, and a failed write fails the run at the next video.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.utils.io_utils import atomic_write_json
from dvis_attn_pl.utils.run_layout import (
    IMAGE_DIMENSIONS,
    RESULTS,
    RESULTS_TEMPORAL,
    RESULTS_TEMPORAL_SUMMARY,
    RunLayout,
    video_sort_key,
)
from dvis_attn_pl.utils.temporal_record import REFINER_ID


class PredictionWriter(Callback):
    """Writes results per video during the loop and merges them on rank 0 at its end."""

    def __init__(self, run_dir: str | Path) -> None:
        self.layout = RunLayout(run_dir)
        self.inference_dir = self.layout.inference
        self.parts_dir = self.layout.parts
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def part_path(self, video_id) -> Path:
        return self.layout.part(video_id)

    def completed_videos(self) -> set[str]:
        """Video ids (as file-name strings) whose part file exists."""
        if not self.parts_dir.is_dir():
            return set()
        return {p.stem for p in self.parts_dir.glob("*.json")}

    def _write(self, result) -> None:
        """Queue the part of ``result`` for the writer thread; raise a failure of an earlier write."""
        if result is None:  # a rank's placeholder step (no video)
            return
        self._drain(wait=False)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-writer")
        self._pending.append(self._pool.submit(self._write_part, result))

    def _drain(self, wait: bool) -> None:
        """Collect finished writes (all of them with ``wait``), raising the first failure."""
        still = []
        for future in self._pending:
            if wait or future.done():
                future.result()
            else:
                still.append(future)
        self._pending = still

    def _write_part(self, result) -> None:
        atomic_write_json(
            self.part_path(result.video_id),
            {
                "video_id": result.video_id,
                "num_frames": result.num_frames,
                "records": result.records,
                "temporal": result.temporal,
                "dimensions": result.dimensions,
            },
        )

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs)

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        self._finish(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module) -> None:
        self._finish(trainer)

    def _finish(self, trainer: L.Trainer) -> None:
        self._drain(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        trainer.strategy.barrier("prediction_writer_merge")
        if trainer.is_global_zero:
            merge_parts(self.parts_dir, self.inference_dir)
        trainer.strategy.barrier("prediction_writer_merged")


def merge_parts(parts_dir: Path, inference_dir: Path) -> dict:
    """Merge every part in ``parts_dir`` into the run's inference files; returns a small summary."""
    parts = [json.loads(p.read_text()) for p in sorted(Path(parts_dir).glob("*.json"))]
    parts.sort(key=lambda part: video_sort_key(part["video_id"]))
    results, temporal, dims, per_video = [], [], {}, {}
    for part in parts:
        results.extend(part["records"])
        for record, extra in zip(part["records"], part["temporal"]):
            temporal.append({**record, **extra})
        dims[str(part["video_id"])] = part["dimensions"]
        per_video[str(part["video_id"])] = sorted(
            {e[REFINER_ID] for e in part["temporal"] if e.get(REFINER_ID) is not None}
        )
    all_ids = sorted({rid for ids in per_video.values() for rid in ids})
    atomic_write_json(inference_dir / RESULTS, results)
    atomic_write_json(inference_dir / RESULTS_TEMPORAL, temporal)
    atomic_write_json(
        inference_dir / RESULTS_TEMPORAL_SUMMARY,
        {"refiner_ids_all": all_ids, "refiner_ids_per_video": per_video, "num_videos": len(parts)},
    )
    atomic_write_json(inference_dir / IMAGE_DIMENSIONS, dims)
    return {"videos": len(parts), "predictions": len(results)}
