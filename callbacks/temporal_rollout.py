"""TemporalRollout: attention rollout over the refiner's time self-attention, on the device, per video.

A processor of :class:`~callbacks.attention_capture.AttentionCapture` (passed in as
``AttentionCapture(..., processors=[TemporalRollout()])``; it neither hooks the model nor is a
callback). The capture calls it right after it has reduced a video: it reads the kept
``refiner_time`` rows (and the ``activation`` pooling weights) of the
:class:`~callbacks.attention_capture.VideoCapture` while they are still on the device, computes
the rollout of all kept instances in one batch with
:func:`dvis_attn_pl.analysis.rollout.temporal_rollout`, and returns the results, which the
capture stores with the video as ``attention_maps/rolled_out/video_<id>.safetensors``:

* ``rollout`` (n, T, T): R = T_L ... T_start (last layer leftmost);
* ``readout.<mode>`` (n, T): per-frame importance for each requested readout;
* ``instance_row``, ``refiner_id``, ``sequence_id`` (n,), ``present`` (n, T).

The rollout is computed from the attention rounded to the stored dtype (float16 by default), so
it can be reproduced exactly from ``video_<id>/refiner_time.safetensors``; this matters for the
discontinuous ``discard_ratio`` cut-off.

With ``mask_padding`` (default) frames where an instance is absent are removed from the attention
graph before the product (see :func:`~dvis_attn_pl.analysis.rollout.mask_padding`), the column
mean runs over present frames only and the activation weights are renormalised over them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dvis_attn_pl.analysis.rollout import HEAD_FUSIONS, READOUTS, RESIDUALS, rollout_readout, temporal_rollout
from dvis_attn_pl.utils.run_layout import ROLLOUT_DIR, video_dir_name

from .attention_capture import Artifact, VideoCapture

__all__ = ["ROLLOUT_DIR", "TemporalRollout"]


class TemporalRollout:
    """Rollout of the captured refiner time attention, stored beside it (a capture processor).

    Args:
        residual: ``"identity"`` (rownorm(A + I), the seed tool's), ``"half"`` ((A + I) / 2) or ``"none"``.
        head_fusion: ``"mean"``/``"max"``/``"min"`` over heads (used when per-head weights were captured).
        discard_ratio: fraction of the lowest weights of each row set to zero before the residual.
        start_layer: first refiner layer in the product.
        readouts: any of ``"column_mean"``, ``"row"``, ``"activation"`` (a^T R with the pooling weights).
        row_frame: the frame whose row the ``"row"`` readout returns (negative counts from the end).
        mask_padding: drop frames where the instance is absent (see the module docstring).
    """

    name = "rollout"  # its options' entry in the manifest's capture section
    requires = ("refiner_time",)  # the attention kind it reads

    def __init__(
        self,
        *,
        residual: str = "identity",
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        start_layer: int = 0,
        readouts: Sequence[str] = ("column_mean", "activation"),
        row_frame: int = -1,
        mask_padding: bool = True,
    ) -> None:
        if residual not in RESIDUALS:
            raise ValueError(f"residual {residual!r} is not one of {RESIDUALS}")
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head fusion {head_fusion!r} is not one of {HEAD_FUSIONS}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard ratio must be in [0, 1), got {discard_ratio}")
        if start_layer < 0:
            raise ValueError(f"start layer must be >= 0, got {start_layer}")
        unknown = [r for r in readouts if r not in READOUTS]
        if unknown or not readouts:
            raise ValueError(f"readouts {list(readouts)} must be a non-empty subset of {READOUTS}")
        self._options = {
            "residual": residual,
            "head_fusion": head_fusion,
            "discard_ratio": float(discard_ratio),
            "start_layer": int(start_layer),
            "readouts": list(dict.fromkeys(readouts)),
            "row_frame": int(row_frame),
            "mask_padding": bool(mask_padding),
        }
        self.last_result: dict[str, torch.Tensor] | None = None

    @property
    def options(self) -> dict:
        """The rollout options (recorded in the manifest and in each rollout file)."""
        return dict(self._options)

    # ------------------------------------------------------------------ the computation
    def compute(self, video: VideoCapture) -> dict[str, torch.Tensor] | None:
        """Rollout and readouts of the video's kept instances, on their device (None without refiner data)."""
        result = video.results.get("refiner_time")
        if result is None:
            return None
        attn = _as_stored(result.tensors["weights"], video.stored_dtype)
        table = video.table
        opts = self._options
        n, num_frames = attn.shape[0], attn.shape[-1]
        valid = table.present.to(attn.device) if opts["mask_padding"] else None
        if n == 0:
            rollout = torch.zeros((0, num_frames, num_frames), dtype=torch.float32, device=attn.device)
        else:
            rollout = temporal_rollout(
                attn,
                residual=opts["residual"],
                head_fusion=opts["head_fusion"],
                discard_ratio=opts["discard_ratio"],
                start_layer=opts["start_layer"],
                valid=valid,
            )
        out = {"rollout": rollout}
        for mode in opts["readouts"]:
            if mode == "column_mean":
                out[f"readout.{mode}"] = rollout_readout(rollout, "column_mean", valid=valid)
            elif mode == "row":
                out[f"readout.{mode}"] = rollout_readout(rollout, "row", frame=opts["row_frame"])
            elif mode == "activation":
                pooled = video.results.get("activation")
                if pooled is None:
                    continue  # the pooling weights were not captured
                a = _as_stored(pooled.tensors["weights"], video.stored_dtype).to(rollout.dtype)
                if valid is not None:
                    a = a * valid.to(a.dtype)
                    a = a / a.sum(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
                out[f"readout.{mode}"] = rollout_readout(rollout, "activation", activation=a)
        return out

    def process_video(self, video: VideoCapture) -> list[Artifact]:
        """Compute and return the rollout artifact of ``video`` (called by the capture)."""
        out = self.compute(video)
        self.last_result = out
        if out is None:
            return []
        layout = {"rollout": "(instance, query_frame, key_frame)"}
        layout.update({k: "(instance, frame)" for k in out if k.startswith("readout.")})
        return [
            Artifact(
                f"{ROLLOUT_DIR}/{video_dir_name(video.video_id)}.safetensors",
                {**out, **video.table.index_vectors()},
                {
                    "kind": "rollout",
                    "video_id": video.video_id,
                    "num_frames": video.num_frames,
                    "frame_range": [0, video.num_frames],
                    "source": f"{video_dir_name(video.video_id)}/refiner_time.safetensors",
                    "sites": video.results["refiner_time"].meta.get("sites", []),
                    "heads": video.results["refiner_time"].meta.get("heads"),
                    "options": self.options,
                    "layout": layout,
                },
            )
        ]


def _as_stored(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``t`` rounded to the dtype the capture stores it in (then float32), so the stored rollout is
    exactly reproducible from the stored attention files."""
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        t = t.to(dtype)
    return t.float()
