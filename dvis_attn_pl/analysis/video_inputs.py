"""One video's inputs for the run-directory analyses, loaded once and shared by every analysis.

:class:`VideoInputs` holds a video's top predictions (from ``results_temporal.json``), decodes
their masks on demand, loads its attention files through :class:`~.run_dir.RunDirectory`, maps
each prediction to its row in every instance-indexed tensor (through the manifest's instance
rows), matches each prediction to a ground-truth instance by temporal mask IoU, and caches the
per-prediction map statistics that several analyses use.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from ..data.rle import RLEMasks, video_mask_iou
from ..utils.errors import UserError
from ..utils.temporal_record import FRAME_IMPORTANCE, PRESENT_FRAMES
from .attention_stats import map_sequence_stats
from .run_dir import Artifact, GroundTruth, RunDirectory

__all__ = ["VideoInputs", "mask_on_grid", "top_predictions"]


def top_predictions(records: list[dict], top_k: int | None) -> list[dict]:
    """The ``top_k`` best-scored records (stable: earlier first on ties); all when ``top_k`` is None."""
    order = sorted(records, key=lambda r: -float(r.get("score", 0.0)))
    return order if top_k is None else order[:top_k]


def _cell_pixels(cells: int, padded: int, resized: int, original: int) -> tuple[np.ndarray, np.ndarray]:
    """First and past-the-end original-frame pixel (cells,) overlapping each of ``cells`` equal cells
    of the padded input (the image is its top-left ``resized`` part; cells in the padding are empty)."""
    edges = np.minimum(np.arange(cells + 1) * (padded / cells), resized) * (original / resized)
    start = np.floor(edges[:-1] + 1e-9).astype(np.int64)
    end = np.maximum(np.ceil(edges[1:] - 1e-9).astype(np.int64), start)
    return start, np.minimum(end, original)


def mask_on_grid(
    masks: np.ndarray, resized: tuple[int, int], padded: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """Cells of a feature grid touched by frame-resolution masks: (T, H, W) -> (T, gh * gw) bool.

    The grid covers the padded network input, whose top-left ``resized`` part is the frame
    (padding bottom/right). A cell is touched when a mask pixel overlaps its footprint on the
    frame; counted with prefix sums over rows and columns, for all frames at once.
    """
    m = np.asarray(masks, dtype=bool)
    t, h, w = m.shape
    y0, y1 = _cell_pixels(int(grid[0]), int(padded[0]), int(resized[0]), h)
    x0, x1 = _cell_pixels(int(grid[1]), int(padded[1]), int(resized[1]), w)
    cy = np.concatenate([np.zeros((t, 1, w), np.int32), np.cumsum(m, axis=1, dtype=np.int32)], axis=1)
    rows = cy[:, y1, :] - cy[:, y0, :]  # (T, gh, W) mask pixels per cell row
    cx = np.concatenate([np.zeros((t, rows.shape[1], 1), np.int32), np.cumsum(rows, axis=2, dtype=np.int32)], axis=2)
    cells = cx[:, :, x1] - cx[:, :, x0]  # (T, gh, gw)
    return (cells > 0).reshape(t, -1)


class VideoInputs:
    """Everything the analyses read about one video (see the module docstring)."""

    def __init__(
        self,
        run: RunDirectory,
        video_id: Any,
        *,
        top_k: int | None,
        ground_truth: GroundTruth | None,
        decoder_layers: tuple[int, ...] | None = None,
    ) -> None:
        self.run = run
        self.video_id = video_id
        self.num_frames = run.num_frames(video_id)
        self.predictions = top_predictions(run.predictions.get(video_id, []), top_k)
        self.gt = ground_truth
        self.decoder_layers = decoder_layers
        self._artifacts: dict[str, Artifact | None] = {}
        self._decoder_stats: dict[int, dict[str, dict]] = {}
        for p in self.predictions:
            fi = p.get(FRAME_IMPORTANCE)
            if fi is not None and len(fi) != self.num_frames:
                raise UserError(
                    f"{run.temporal_path}: video {video_id} prediction {p['index']} has {len(fi)} "
                    f"frame_importance values for {self.num_frames} frames"
                )

    # ------------------------------------------------------------------ sizes and masks
    @cached_property
    def dimensions(self) -> dict | None:
        return self.run.video_dimensions(self.video_id)

    @cached_property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the original frames."""
        dims = self.dimensions
        if dims and dims.get("original"):
            return int(dims["original"][0]), int(dims["original"][1])
        for p in self.predictions:
            for rle in p.get("segmentations") or []:
                if rle:
                    return int(rle["size"][0]), int(rle["size"][1])
        raise UserError(
            f"{self.run.inference_dir / 'image_dimensions.json'}: missing or lacks video {self.video_id}; "
            "the frame size is unknown"
        )

    @cached_property
    def masks(self) -> list[RLEMasks]:
        """The top predictions' masks, (T, H, W) bool each, decoded from their RLEs when indexed."""
        h, w = self.frame_size
        out = []
        for p in self.predictions:
            rles = p.get("segmentations") or []
            if len(rles) != self.num_frames:
                raise UserError(
                    f"{self.run.temporal_path}: video {self.video_id} prediction {p['index']} has "
                    f"{len(rles)} masks for {self.num_frames} frames"
                )
            out.append(RLEMasks(rles, h, w))
        return out

    @cached_property
    def present(self) -> np.ndarray:
        """(N, T) bool: frames where each prediction's tracked instance was present."""
        out = np.zeros((len(self.predictions), self.num_frames), dtype=bool)
        for i, p in enumerate(self.predictions):
            frames = [f for f in p.get(PRESENT_FRAMES) or [] if 0 <= int(f) < self.num_frames]
            out[i, frames] = True
        return out

    def frame_importance(self, i: int) -> np.ndarray | None:
        fi = self.predictions[i].get(FRAME_IMPORTANCE)
        return None if fi is None else np.asarray(fi, dtype=np.float64)

    # ------------------------------------------------------------------ attention files
    def artifact(self, kind: str) -> Artifact | None:
        if kind not in self._artifacts:
            self._artifacts[kind] = self.run.load_artifact(self.video_id, kind, f"reading its {kind} attention")
        return self._artifacts[kind]

    @cached_property
    def instance_rows(self) -> dict[int, int]:
        return self.run.instance_rows(self.video_id)

    def position(self, art: Artifact | None, i: int) -> int | None:
        """Row of prediction ``i`` (position in :attr:`predictions`) on ``art``'s instance axis."""
        if art is None:
            return None
        row = self.instance_rows.get(int(self.predictions[i]["index"]))
        return None if row is None else art.instance_position(row)

    def refiner_time(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(L, T, T) head-averaged refiner time attention of prediction ``i`` and its present (T,)."""
        art = self.artifact("refiner_time")
        pos = self.position(art, i)
        if pos is None:
            return None
        w = art.tensors["weights"][pos]  # (L, [H,] T, T)
        return (w.mean(axis=1) if w.ndim == 4 else w), art.tensors["present"][pos].astype(bool)

    def rollout(self, i: int) -> dict[str, np.ndarray] | None:
        """Prediction ``i``'s rollout ``matrix`` (T, T), ``present`` (T,) and ``readout.<mode>`` (T,)."""
        art = self.artifact("rollout")
        pos = self.position(art, i)
        if pos is None:
            return None
        out = {"matrix": art.tensors["rollout"][pos], "present": art.tensors["present"][pos].astype(bool)}
        out.update({k: v[pos] for k, v in art.tensors.items() if k.startswith("readout.")})
        return out

    def decoder_layers_available(self) -> list[int]:
        art = self.artifact("decoder_cross")
        if art is None:
            return []
        layers = sorted(int(k[len("layer") : -len(".maps")]) for k in art.tensors if k.endswith(".maps"))
        return layers

    def decoder_maps(self, i: int, layer: int) -> dict[str, np.ndarray] | None:
        """Prediction ``i``'s decoder maps of one layer: ``maps`` (T', h, w) head-averaged, ``frames``
        (T',) video frame of each map, ``weighted`` (T',) (False: no tracker row, the map is zero)."""
        art = self.artifact("decoder_cross")
        pos = self.position(art, i)
        key = f"layer{layer}.maps"
        if pos is None or key not in art.tensors:
            return None
        maps = art.tensors[key][pos]  # (T', [H,] h, w)
        if maps.ndim == 4:
            maps = maps.mean(axis=1)
        return {
            "maps": maps,
            "frames": art.tensors["frames"].astype(np.int64),
            "weighted": art.tensors["weighted"][pos].astype(bool),
        }

    def decoder_regions(
        self, i: int, frames: np.ndarray, grids: list[tuple[int, int]]
    ) -> list[np.ndarray] | None:
        """Cells of each grid touched by prediction ``i``'s mask at ``frames``: one (T', gh * gw) bool
        array per grid, or None when the resized / padded sizes are unknown. The masks are decoded
        once, in chunks of frames (bounded memory)."""
        dims = self.dimensions or {}
        if not dims.get("resized") or not dims.get("padded"):
            return None
        resized, padded, masks = tuple(dims["resized"]), tuple(dims["padded"]), self.masks[i]
        parts: list[list[np.ndarray]] = [[] for _ in grids]
        step = 32
        for s in range(0, len(frames), step):  # frame chunks bound the memory
            chunk = masks[frames[s : s + step]]
            for g, grid in enumerate(grids):
                parts[g].append(mask_on_grid(chunk, resized, padded, grid))
        return [np.concatenate(p) if p else np.zeros((0, g[0] * g[1]), dtype=bool) for p, g in zip(parts, grids)]

    def decoder_stats(self, i: int) -> dict[str, dict]:
        """``{"layer<l>": map_sequence_stats}`` of prediction ``i``'s decoder maps (cached), region = the
        prediction's mask on the map's grid, valid = frames with a tracker row."""
        if i not in self._decoder_stats:
            maps = {layer: d for layer in self.decoder_layers_available()
                    if (d := self.decoder_maps(i, layer)) is not None}
            out: dict[str, dict] = {}
            if maps:
                frames = next(iter(maps.values()))["frames"]
                regions = self.decoder_regions(i, frames, [tuple(d["maps"].shape[-2:]) for d in maps.values()])
                for n, (layer, d) in enumerate(maps.items()):
                    region = None if regions is None else regions[n]
                    out[f"layer{layer}"] = map_sequence_stats(d["maps"], valid=d["weighted"], region=region)
            self._decoder_stats[i] = out
        return self._decoder_stats[i]

    # ------------------------------------------------------------------ ground truth
    @cached_property
    def gt_video(self) -> tuple[list[dict], list[RLEMasks]] | None:
        """The video's GT annotations and their masks, or None without usable ground truth."""
        if self.gt is None or not self.gt.has_annotations or self.video_id not in self.gt.videos:
            return None
        video = self.gt.videos[self.video_id]
        if int(video["length"]) != self.num_frames:
            raise UserError(
                f"{self.gt.path}: video {self.video_id} has {video['length']} frames but the run has "
                f"{self.num_frames}; the ground truth does not belong to this run"
            )
        return self.gt.masks(self.video_id)

    @cached_property
    def gt_matches(self) -> list[dict | None]:
        """Per prediction the GT instance with the highest temporal mask IoU (> 0; lower annotation id
        on ties): ``{"annotation_id", "category_id", "iou", "present" (T,) bool}``; None if none overlaps."""
        gt = self.gt_video
        if gt is None or not self.predictions:
            return [None] * len(self.predictions)
        anns, gt_masks = gt
        if not anns:
            return [None] * len(self.predictions)
        if gt_masks[0].shape[1:] != self.frame_size:
            raise UserError(
                f"{self.gt.path}: video {self.video_id} is {gt_masks[0].shape[1:]} but the predicted "
                f"masks are {self.frame_size}"
            )
        iou = video_mask_iou(self.masks, gt_masks)  # (N, A)
        best = iou.argmax(axis=1)
        present = np.stack([m.present() for m in gt_masks])  # (A, T)
        out: list[dict | None] = []
        for i, j in enumerate(best.tolist()):
            if iou[i, j] <= 0:
                out.append(None)
                continue
            out.append(
                {
                    "annotation_id": anns[j]["id"],
                    "category_id": anns[j]["category_id"],
                    "iou": float(iou[i, j]),
                    "present": present[j],
                }
            )
        return out
