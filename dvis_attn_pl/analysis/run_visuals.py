"""The visual outputs of ``analyze``: PNG figures, MP4 prediction videos and TensorBoard events.

Files (under the run directory)::

    inference/plots/frame_importance/video_<id>/pred<k>.png      pooling weights + rollout readouts,
                                                                  GT-present frames shaded
    inference/plots/temporal_attention/video_<id>/pred<k>.png    refiner frame-to-frame attention per layer
    inference/plots/rollout/video_<id>/pred<k>.png               rollout matrix + readout
    inference/plots/decoder_attention/video_<id>/pred<k>_layer<l>_<scaling>_<style>.png
    inference/plots/tracker_attention/video_<id>/pred<k>.png     tracker frames x segmenter queries
    inference/plots/cue_table.png                                 the per-class cue reading table
    inference/videos/video_<id>.mp4                               frames, outlined masks per species,
                                                                  scores, attention, importance strip
    tensorboard/analyze/                                          RunBoard events (replaced as a whole)

``<k>`` is the prediction's index among its video's predictions (score order, as in the results).
The TensorBoard folder is written into a temporary folder and moved into place at the end, so a
rerun replaces the previous events instead of adding to them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.errors import UserError
from ..utils.io_utils import atomic_write_bytes, safe_name
from ..utils.temporal_record import SEQUENCE_ID
from .run_dir import GroundTruth, RunDirectory
from .video_inputs import VideoInputs

__all__ = ["RunVisuals", "VideoFrames"]

TRUE_CLASS_IOU = 0.5  # videos name the matched GT's class only for a match at least this good
CUE_TABLE_COLUMNS = (
    ("class", "class"),
    ("designed_cue", "designed cue"),
    ("reading", "reading"),
    ("proxy", "strongest proxy"),
    ("effect_size", "effect size"),
    ("p_value", "p (Holm)"),
    ("n", "n"),
)


class VideoFrames:
    """A video's frames, (T, H, W, 3) uint8, read from the files named in the ground-truth json when
    indexed (an int, a slice or an index array), so a long video is never held whole unless asked."""

    dtype = np.dtype(np.uint8)

    def __init__(self, gt: GroundTruth, frames_root: Path, video_id: Any, size: tuple[int, int]) -> None:
        from ..data.frames import resolve_frame_path

        names = gt.videos[video_id].get("file_names") or []
        try:
            self.paths = [resolve_frame_path(frames_root, n) for n in names]
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.video_id, self.root = video_id, frames_root
        self.shape = (len(self.paths), int(size[0]), int(size[1]), 3)
        self._all: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, t: int) -> np.ndarray:
        from ..data.frames import FrameError, read_frame

        try:
            frame = read_frame(self.paths[t])
        except FrameError as exc:
            raise UserError(str(exc)) from None
        if frame.shape != self.shape[1:]:
            raise UserError(f"{self.paths[t]}: frame is {frame.shape[:2]} but video {self.video_id}'s "
                            f"predictions are {self.shape[1:3]}")
        return frame

    def __getitem__(self, index):
        if self._all is not None:
            return self._all[index]
        if isinstance(index, (int, np.integer)):
            return self._read(int(index))
        frames = np.arange(self.shape[0])[index]
        if frames.size == 0:
            return np.zeros((0, *self.shape[1:]), dtype=np.uint8)
        return np.stack([self._read(t) for t in frames.tolist()])  # one decode per frame

    def load_all(self) -> np.ndarray:
        """Every frame, kept for later indexing (the decoder overlays scale over the whole video)."""
        if self._all is None:
            self._all = self[:]
        return self._all


class RunVisuals:
    """Draws one video at a time (:meth:`add_video`), then the run-level figures (:meth:`finish`)."""

    def __init__(
        self,
        run: RunDirectory,
        opts,
        *,
        gt: GroundTruth | None,
        plots: bool,
        videos: bool,
        tensorboard: bool,
        note: Callable[[str], None],
    ) -> None:
        self.run, self.opts, self.gt, self.note = run, opts, gt, note
        self.do_plots, self.do_videos = plots, videos
        self.plot_dir = run.inference_dir / "plots"
        self.video_dir = run.inference_dir / "videos"
        self.written: list[Path] = []
        self.seconds: dict[str, float] = {}
        self._noted: set[str] = set()
        self._layers_checked = False
        self.frames_root, self._frames_why = run.frames_root
        self.board = None
        self._tb_tmp: Path | None = None
        self._fi_rows: list[dict] = []
        self._curve_videos: list[str] = []
        if tensorboard:
            from ..viz import RunBoard

            run.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self._tb_tmp = Path(tempfile.mkdtemp(prefix=".analyze-tensorboard-", dir=run.root))
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self._tb_tmp, 0o777 & ~mask)  # mkdtemp makes it private; the run's folders are not
            self.board = RunBoard(self._tb_tmp, flush_secs=3600)

    # ------------------------------------------------------------------ helpers
    def _once(self, key: str, message: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.note(message)

    def _timed(self, stage: str, t0: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def _figure(self, fig, path: Path | None, tag: str | None, step: int = 0) -> None:
        """Render once (a matplotlib figure, or an image drawn by :mod:`..viz.raster`); save the PNG
        (plots stage) and log it (tensorboard stage)."""
        from ..viz.plots import figure_to_png
        from ..viz.raster import png as image_to_png

        if path is None and (self.board is None or tag is None):
            return
        png = image_to_png(fig) if isinstance(fig, np.ndarray) else figure_to_png(fig)
        if self.do_plots and path is not None:
            atomic_write_bytes(path, png)
            self.written.append(path)
        if self.board is not None and tag is not None:
            self.board.add_png(tag, png, step)

    def _plot_path(self, kind: str, video_id: Any, name: str) -> Path | None:
        if not self.do_plots:
            return None
        return self.plot_dir / kind / f"video_{safe_name(video_id)}" / f"{name}.png"

    def _category_name(self, cid: Any) -> str:
        if self.gt is not None and cid in self.gt.categories:
            return self.gt.categories[cid]["name"]
        return f"class {cid}"

    def _label(self, v: VideoInputs, i: int) -> str:
        p = v.predictions[i]
        return (f"video {v.video_id}, prediction {p['index']} "
                f"({self._category_name(p.get('category_id'))}, score {float(p.get('score', 0.0)):.3f})")

    def _drawn_layers(self, v: VideoInputs) -> list[int]:
        available = v.decoder_layers_available()
        if not available:
            if self.opts.layers is not None:
                self._once("layers", f"--layers ignored for video {v.video_id}: no decoder cross-attention captured")
            return []
        if self.opts.layers is None:
            return [available[-1]]
        if not self._layers_checked:
            self._layers_checked = True
            missing = [layer for layer in self.opts.layers if layer not in available]
            if missing:
                raise UserError(
                    f"--layers {','.join(map(str, missing))}: decoder layer not captured "
                    f"(captured: {', '.join(map(str, available))})"
                )
        return [layer for layer in self.opts.layers if layer in available]

    def _frames(self, v: VideoInputs) -> VideoFrames | None:
        if self.gt is None or self.frames_root is None:
            self._once("frames", f"no frames for decoder overlays and videos: {self._frames_why}")
            return None
        if v.video_id not in self.gt.videos:
            self._once(f"frames{v.video_id}", f"video {v.video_id} is not in {self.gt.path}: no frames to draw on")
            return None
        frames = VideoFrames(self.gt, self.frames_root, v.video_id, v.frame_size)
        if len(frames) != v.num_frames:
            raise UserError(f"{self.gt.path}: video {v.video_id} names {len(frames)} frame files but the run has "
                            f"{v.num_frames} frames")
        return frames

    # ------------------------------------------------------------------ per video
    def add_video(self, v: VideoInputs) -> None:
        """Figures, overlays, tracker frames, the MP4 and the TensorBoard records of one video."""
        t0 = time.perf_counter()
        layers = self._drawn_layers(v)
        frames = self._frames(v) if (self.do_videos or layers) and v.predictions else None
        for i in range(len(v.predictions)):
            self._prediction_figures(v, i, frames, layers)
        self._tracker_frames(v)
        self._timed("plots" if self.do_plots else "tensorboard", t0)
        if self.do_videos and frames is not None and v.predictions:
            t0 = time.perf_counter()
            self._video(v, frames, layers)
            self._timed("videos", t0)

    def _prediction_figures(self, v: VideoInputs, i: int, frames: VideoFrames | None, layers: list[int]) -> None:
        from ..viz import make_tag
        from ..viz.raster import draw_frame_importance, draw_rollout, draw_temporal_attention

        p = v.predictions[i]
        k, vid = p["index"], v.video_id
        label = self._label(v, i)
        present = v.present[i]
        valid = present if present.any() else None
        match = v.gt_matches[i]
        fi = v.frame_importance(i)
        roll = v.rollout(i)
        curves: dict[str, np.ndarray] = {}
        if fi is not None:
            curves["pooling weights (exact)"] = fi
        if roll is not None:
            for key in sorted(x for x in roll if x.startswith("readout.")):
                curves[f"rollout, {key[len('readout.'):].replace('_', ' ')}"] = roll[key]
        if curves:
            fig = draw_frame_importance(
                curves, gt_present=None if match is None else match["present"], valid=valid,
                title=f"Frame importance: {label}"
                + ("" if match is None else f"; GT annotation {match['annotation_id']} (IoU {match['iou']:.2f})"),
            )
            self._figure(fig, self._plot_path("frame_importance", vid, f"pred{k}"),
                         make_tag("frame_importance", vid, k, "plot"))
            if self.board is not None and fi is not None:
                self.board.add_curve("frame_importance", fi, video_id=vid, instance=k)
                self._curve_videos.append(str(vid))
        ref = v.refiner_time(i)
        if ref is not None:
            mats, ref_present = ref
            fig = draw_temporal_attention(mats, valid=ref_present if ref_present.any() else None,
                                          title=f"Refiner temporal self-attention: {label}")
            self._figure(fig, self._plot_path("temporal_attention", vid, f"pred{k}"),
                         make_tag("temporal_attention", vid, k))
        if roll is not None:
            key = "readout.column_mean" if "readout.column_mean" in roll else next(
                (x for x in sorted(roll) if x.startswith("readout.")), None)
            if key is not None:
                fig = draw_rollout(roll["matrix"], roll[key], valid=roll["present"] if roll["present"].any() else None,
                                   readout_label=key[len("readout."):].replace("_", " "),
                                   title=f"Temporal attention rollout: {label}")
                self._figure(fig, self._plot_path("rollout", vid, f"pred{k}"), make_tag("rollout", vid, k))
        if frames is None:
            return
        for layer in layers:
            d = v.decoder_maps(i, layer)
            if d is None:
                continue
            self._decoder(v, i, frames, layer, d, fi, label)

    def _decoder(self, v: VideoInputs, i: int, frames: VideoFrames, layer: int, d: dict, fi, label: str) -> None:
        from ..viz import attention_overlay, make_tag, plot_decoder_attention

        k, vid = v.predictions[i]["index"], v.video_id
        idx = d["frames"]
        frames = frames.load_all()
        dims = v.dimensions or {}
        geometry = {"input_hw": tuple(dims["resized"]) if dims.get("resized") else None,
                    "padded_hw": tuple(dims["padded"]) if dims.get("padded") else None}
        if geometry["input_hw"] is None or geometry["padded_hw"] is None:
            geometry = {"input_hw": None, "padded_hw": None}
            self._once("geometry", "image_dimensions.json lacks resized/padded sizes: attention maps are "
                       "stretched over the whole frame")
        importance = None if fi is None else fi[idx]
        first = None
        for scaling in self.opts.scalings:
            if scaling.endswith("_weighted") and importance is None:
                self._once(f"w{scaling}", f"scaling {scaling} skipped: the run has no frame importance")
                continue
            for style in self.opts.styles:
                first = first or (scaling, style)
                if not self.do_plots and self.board is None:
                    continue
                fig = plot_decoder_attention(
                    frames[idx], d["maps"], scaling=scaling, importance=importance, style=style, **geometry,
                    title=f"Decoder cross-attention, layer {layer}: {label}",
                )
                self._figure(fig, self._plot_path("decoder_attention", vid, f"pred{k}_layer{layer}_{scaling}_{style}"),
                             make_tag("decoder_attention", vid, k, f"layer{layer}", f"{scaling}_{style}"))
        if self.board is not None and first is not None and i == 0:
            # every frame of the best prediction, step = frame index (the montages cover the others)
            overlay, _ = attention_overlay(frames[idx], d["maps"], scaling=first[0], importance=importance,
                                           style=first[1], **geometry)
            tag = make_tag("decoder_attention", vid, k, f"layer{layer}")
            for frame, image in zip(idx.tolist(), overlay):  # one image per frame, step = frame index
                self.board.add_image(tag, image, frame)

    def _tracker_frames(self, v: VideoInputs) -> None:
        """Per top prediction: its sequence's tracker cross-attention at every tracker frame (rows =
        frames, columns = segmenter queries, mean over layers: the same ranking as the sum)."""
        from ..viz import make_tag
        from ..viz.raster import draw_tracker_attention

        art = v.artifact("tracker_cross")
        if art is None:
            return
        w = art.tensors["weights"]
        if w.ndim == 4:
            w = w.mean(axis=2)
        n_layers = w.shape[0]
        w = w.mean(axis=0)  # (R, Q)
        frame, seq = art.tensors["frame"].astype(np.int64), art.tensors["sequence_id"].astype(np.int64)
        drawn: set[int] = set()
        for p in v.predictions:
            s = p.get(SEQUENCE_ID)
            if s is None or int(s) < 0 or int(s) in drawn:
                continue
            drawn.add(int(s))
            rows = np.flatnonzero(seq == int(s))
            rows = rows[np.argsort(frame[rows], kind="stable")]
            if not rows.size:
                continue
            fig = draw_tracker_attention(
                w[rows], top_k=self.opts.tracker_k, row_labels=[f"frame {f}" for f in frame[rows].tolist()],
                title=f"Tracker cross-attention of sequence {s}: {self._label(v, v.predictions.index(p))}, "
                f"mean over {n_layers} layers",
                ylabel="tracker frame", max_row_labels=40,  # readable frame labels on long videos
            )
            self._figure(fig, self._plot_path("tracker_attention", v.video_id, f"pred{p['index']}"),
                         make_tag("tracker_attention", v.video_id, p["index"]))

    def _video(self, v: VideoInputs, frames: VideoFrames, layers: list[int]) -> None:
        from ..viz import PredictionTrack, fit_video, iter_prediction_video, make_tag, write_mp4

        tracks = []
        for i, p in enumerate(v.predictions):
            match = v.gt_matches[i]
            tracks.append(PredictionTrack(
                masks=v.masks[i], category_id=p.get("category_id"), score=float(p.get("score", 0.0)),
                true_category_id=None if match is None or match["iou"] < TRUE_CLASS_IOU else match["category_id"],
                name=f"#{p['index']}",
            ))
        importance = v.frame_importance(0)
        attention = None
        if layers:
            d = v.decoder_maps(0, layers[0])
            if d is not None:
                attention = np.zeros((v.num_frames, *d["maps"].shape[1:]), dtype=np.float32)
                attention[d["frames"]] = d["maps"]
        scaling = self.opts.scalings[0]
        if scaling.endswith("_weighted") and importance is None:
            scaling = scaling[: -len("_weighted")]
        order = self.opts.order_by_importance and importance is not None
        if self.opts.order_by_importance and importance is None:
            self._once("order", "--order-by-importance ignored: the run has no frame importance")
        dims = v.dimensions or {}
        has_geometry = bool(dims.get("resized") and dims.get("padded"))
        match = v.gt_matches[0]
        chunks = iter_prediction_video(
            frames, tracks, category_names={c: d["name"] for c, d in (self.gt.categories.items() if self.gt else [])},
            attention=attention, attention_scaling=scaling, attention_style=self.opts.styles[0],
            input_hw=tuple(dims["resized"]) if has_geometry else None,
            padded_hw=tuple(dims["padded"]) if has_geometry else None,
            importance=importance, gt_present=None if match is None else match["present"],
            order_by_importance=order,
        )
        small: list[np.ndarray] = []

        def keep_small(it):
            for chunk in it:
                if self.board is not None:
                    small.append(fit_video(chunk, 480))
                yield chunk

        path = self.video_dir / f"video_{safe_name(v.video_id)}.mp4"
        write_mp4(keep_small(chunks), path)
        self.written.append(path)
        if self.board is not None and small:
            self.board.add_animation(make_tag("predictions", v.video_id), np.concatenate(small))

    # ------------------------------------------------------------------ run level
    def finish(self, results: dict[str, dict]) -> None:
        """The cue table figure, TensorBoard summaries, metrics, layout and hparams; then the events move
        into ``tensorboard/analyze``."""
        from ..viz import plot_class_table

        t0 = time.perf_counter()
        cues = results.get("cues")
        if cues is not None:
            random = cues["settings"].get("weights_random")
            title = "Per-class cue reading" + (" (random weights: uninformative)" if random else "")
            fig = plot_class_table(cues["table"], columns=CUE_TABLE_COLUMNS, title=title)
            self._figure(fig, self.plot_dir / "cue_table.png" if self.do_plots else None, "summary/cue_table")
            if self.board is not None:
                self.board.add_text_table("summary/cue_reading", cues["table"],
                                          [c for c, _ in CUE_TABLE_COLUMNS],
                                          preamble=_proxy_preamble(cues))
        causal = results.get("causal")
        if causal is not None and self.board is not None:
            columns = ["class", "designed_cue", "verdict"] + sorted(
                {k for row in causal["table"] for k in row if k.startswith("R_")}
            ) + ["freeze_attraction", "proxy_reading", "proxy_agrees"]
            self.board.add_text_table(
                "summary/causal_cues", causal["table"], columns,
                preamble="Causal verdict per class from the intervention passes (R = p altered / p unaltered; "
                "inference/causal_cues.json has the intervals and tests) beside the attention-proxy reading.",
            )
            faith = causal.get("faithfulness")
            if faith:
                from .causal_cues import faithfulness_rows

                self.board.add_text_table(
                    "summary/deletion_faithfulness", faithfulness_rows(faith),
                    preamble=f"Deletion curves of {faith['instances']} predictions: per frame importance, the mean and "
                    "95 % interval over videos (inference/causal_cues.json, faithfulness).",
                )
        self._timed("plots" if self.do_plots else "tensorboard", t0)
        if self.board is not None:
            t0 = time.perf_counter()
            self._board_summaries(results)
            self.board.close()
            self._install_board()
            self._timed("tensorboard", t0)

    def _board_summaries(self, results: dict[str, dict]) -> None:
        from ..viz.tensorboard import metrics_layout

        board = self.board
        fi = results.get("frame_importance")
        if fi is not None:
            rows = [
                {"video": doc["video_id"], "prediction": e["index"], "class": self._category_name(e["category_id"]),
                 "score": e["score"], "entropy (norm.)": e["entropy_normalised"], "peak frame": e["peak_frame"],
                 "GT mass lift": e.get("gt_mass_lift")}
                for doc in fi["videos"] for e in doc["predictions"]
            ]
            board.add_text_table("summary/frame_importance", rows)
        decision = results.get("decision")
        if decision is not None:
            board.add_text_table("summary/decision_timing", [
                {k: v for k, v in decision["summary"].items() if not isinstance(v, (dict, list))}])
        tags: dict[str, float] = {}
        metrics = self.run.metrics or {}
        if metrics.get("ytvis"):
            tags.update(board.add_metrics(metrics["ytvis"]))
        timing = metrics.get("decision_timing") or (decision or {}).get("summary") or {}
        ap_after = timing.get("AP_after_fraction_of_frames") or {}
        tags.update(board.add_metrics({k.rstrip("%") + "pct": v for k, v in ap_after.items() if v is not None},
                                      prefix="metrics/AP_after_frames"))
        layout = metrics_layout(list(tags)) if tags else {}
        videos = sorted(set(self._curve_videos), key=lambda s: (len(s), s))
        if videos:
            layout["frame importance"] = {
                f"video {vid}": ["Multiline", [f"^frame_importance/video_{vid}/instance_[^/]+$"]] for vid in videos
            }
        if layout:
            board.add_layout(layout)
        if self.run.config:
            board.add_hparams(self.run.config, list(tags))

    def _install_board(self) -> None:
        """Replace ``tensorboard/analyze`` by the freshly written folder (old one moved aside, then removed)."""
        target = self.run.tensorboard_dir / "analyze"
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".analyze-old-", dir=self.run.root))
            os.replace(target, old / "analyze")
        os.replace(self._tb_tmp, target)
        self._tb_tmp = None
        self.written.extend(sorted(p for p in target.rglob("*") if p.is_file()))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop the half-written TensorBoard folder (the previous one stays)."""
        if self.board is not None:
            try:
                self.board.close()
            except Exception:  # noqa: BLE001 - already failing; cleanup only
                pass
        if self._tb_tmp is not None:
            shutil.rmtree(self._tb_tmp, ignore_errors=True)
            self._tb_tmp = None


def _proxy_preamble(cues: dict) -> str:
    """The cue table's note, led by whether the control experiment validated the proxies."""
    status = cues.get("proxy_status") or {}
    lead = ""
    if status.get("status") == "descriptive only":
        lead = f"**Descriptive only**: {status.get('why', '')}; these readings say where attention goes, not what the decision depends on (see the causal verdicts).\n\n"
    return lead + cues["control_experiment"]["note"]
