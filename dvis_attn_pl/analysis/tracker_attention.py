"""Tracker cross-attention: which segmenter queries each tracked sequence reads, per frame and layer.

In DAQ's tracker, at every frame and layer the track/anchor queries (rows) attend to that frame's
segmenter query embeddings (columns). For a sequence id, its row at a frame is the row whose
sequence id matches (rows with a negative id, e.g. queries not yet assigned or the first frame
where the segmenter queries attend to themselves, match nothing). Per frame the result is the
top-k columns of that row for every layer and of the row summed over layers.

Row and column counts are taken from the data at every frame (no fixed query count), ``k`` is
capped by the number of columns, and frames where a sequence has no row are listed, not
silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..utils.arrays import as_array, json_ready

__all__ = ["frame_topk", "sequence_rows", "video_tracker_topk"]


def _topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries along the last axis, largest first.

    Ties go to the lower index.
    """
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(x, order, axis=-1)


def sequence_rows(row_seq_ids: Any, seq_ids: Sequence[int]) -> np.ndarray:
    """Row index of each wanted sequence id in ``row_seq_ids`` (R,), -1 where absent.

    Raises ValueError when a non-negative sequence id occupies more than one row.
    """
    rows = as_array(row_seq_ids, dtype=np.int64, name="row_seq_ids").reshape(-1)
    assigned = rows[rows >= 0]
    uniq, counts = np.unique(assigned, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"row_seq_ids: sequence ids {uniq[counts > 1].tolist()} occupy more than one row")
    wanted = np.asarray(list(seq_ids), dtype=np.int64)
    match = (rows[None, :] == wanted[:, None]) & (wanted[:, None] >= 0)
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


def frame_topk(
    attn: Any, row_seq_ids: Any, seq_ids: Sequence[int], k: int = 5
) -> dict[int, dict[str, np.ndarray]]:
    """Top-k segmenter queries of each wanted sequence at one frame.

    ``attn``: (L, R, Q) weights of the L tracker layers (or (R, Q) for one layer), rows = track
    queries, columns = segmenter queries; ``row_seq_ids``: (R,) sequence id of each row (negative
    = none). Returns ``{seq_id: {"indices" (L, k), "values" (L, k), "sum_indices" (k,),
    "sum_values" (k,), "row" (L, Q)}}`` for the sequences that have a row.
    """
    a = as_array(attn, name="attn")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"attn: expected (L, R, Q) or (R, Q), got shape {a.shape}")
    rows_ids = as_array(row_seq_ids, dtype=np.int64, name="row_seq_ids").reshape(-1)
    if rows_ids.shape[0] != a.shape[1]:
        raise ValueError(f"row_seq_ids: {rows_ids.shape[0]} ids for {a.shape[1]} attention rows")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    wanted = list(seq_ids)
    rows = sequence_rows(rows_ids, wanted)
    have = rows >= 0
    if not have.any():
        return {}
    kk = min(k, a.shape[2])
    picked = a[:, rows[have], :].transpose(1, 0, 2)  # (S, L, Q)
    idx, val = _topk(picked, kk)
    sum_idx, sum_val = _topk(picked.sum(axis=1), kk)
    out = {}
    for j, seq in enumerate(s for s, h in zip(wanted, have) if h):
        out[int(seq)] = {
            "indices": idx[j],
            "values": val[j],
            "sum_indices": sum_idx[j],
            "sum_values": sum_val[j],
            "row": picked[j],
        }
    return out


def video_tracker_topk(
    frames: Iterable[tuple[int, Any, Any]],
    seq_ids: Sequence[int],
    *,
    k: int = 5,
    layer_names: Sequence[str] | None = None,
    include_rows: bool = False,
    extra: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """JSON-ready top-k summary of one video for the wanted sequences.

    ``frames``: ``(frame_index, attn (L, R, Q), row_seq_ids (R,))`` per tracker frame (a loop over
    frames: the tracker is sequential and R, Q may change from frame to frame). ``layer_names``
    name the L layers (default ``"0".."L-1"``). ``include_rows`` also stores every layer's full row.
    ``extra``: per sequence id, fields copied into its entry (e.g. ``refiner_id``).
    Per sequence: ``frames`` -> ``{frame: {"num_queries", "layers": {name: {"indices",
    "values"}}, "sum_over_layers": {"indices", "values"}, "layers_agree_on_argmax"}}`` and
    ``frames_without_row`` (frames where the sequence had no row).
    """
    wanted = [int(s) for s in seq_ids]
    result: dict[int, dict[str, Any]] = {
        s: {"sequence_id": s, **(extra or {}).get(s, {}), "frames": {}, "frames_without_row": []}
        for s in wanted
    }
    for frame, attn, row_ids in frames:
        try:
            found = frame_topk(attn, row_ids, wanted, k)
        except ValueError as err:
            raise ValueError(f"tracker frame {frame}: {err}") from None
        for s in wanted:
            if s not in found:
                result[s]["frames_without_row"].append(int(frame))
                continue
            f = found[s]
            n_layers = f["indices"].shape[0]
            names = list(layer_names) if layer_names is not None else [str(i) for i in range(n_layers)]
            if len(names) != n_layers:
                raise ValueError(f"tracker frame {frame}: {len(names)} layer names for {n_layers} layers")
            layers = {}
            for li, name in enumerate(names):
                layers[name] = {"indices": f["indices"][li], "values": f["values"][li]}
                if include_rows:
                    layers[name]["attention"] = f["row"][li]
            result[s]["frames"][str(int(frame))] = {
                "num_queries": int(f["row"].shape[-1]),
                "layers": layers,
                "sum_over_layers": {"indices": f["sum_indices"], "values": f["sum_values"]},
                "layers_agree_on_argmax": bool((f["indices"][:, 0] == f["indices"][0, 0]).all()),
            }
    return json_ready({"k": k, "sequences": {str(s): result[s] for s in wanted}})
