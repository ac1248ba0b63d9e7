"""From one video's captured attention calls to the tensors worth keeping (device-side, no I/O).

The capture sink (:mod:`callbacks.attention_capture`) collects one :class:`CapturedCall` per site
call while a video runs. Once the video's predictions are known, the functions here keep what was
asked for, as batched tensor ops on the tensors' device:

* ``refiner_time``: (N_ins, T, T) per layer -> ``weights`` (n, L, [H,] T, T), rows = kept instances;
* ``activation``: the refiner's temporal pooling weights -> ``weights`` (n, T) (frame importance);
* ``tracker_cross``: (Nq_t, fQ) per frame and layer -> ``weights`` (L, R, [H,] fQ) with row index
  vectors ``frame``, ``row``, ``sequence_id``, ``refiner_id`` (R,);
* ``decoder_cross``: (Tw, Q, HW_l) per window and layer -> per-prediction maps
  ``layer<i>.maps`` (m, T', [H,] H_l, W_l): for each prediction and frame, the segmenter queries'
  maps summed with the weights of the tracker cross-attention row of the prediction's sequence;
* any other kind: the raw tensors per site, concatenated over calls where shapes allow.

Every result carries the index vectors needed to read it without the model (frames, instance
rows, sequence and refiner ids, presence masks) and a JSON-able ``meta`` for the manifest.

:data:`REDUCERS` maps each kind to its reducer; :func:`reduce_kind` applies it with the video's
:class:`ReduceRequest` (a kind without an entry keeps its raw tensors). A new kind with a reduction
of its own is one function and one registry entry.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dvis_attn_pl.model.meta_arch import InferenceTrace
from dvis_attn_pl.model.meta_arch_offline import OfflineInferenceTrace

__all__ = [
    "REDUCERS",
    "CapturedCall",
    "InstanceTable",
    "KindResult",
    "ReduceRequest",
    "Reducer",
    "feature_grid",
    "instance_table",
    "reduce_activation",
    "reduce_decoder_cross",
    "reduce_generic",
    "reduce_kind",
    "reduce_refiner_time",
    "reduce_tracker_cross",
    "site_layer",
    "tracker_row_table",
]

SEGMENTER_KINDS = frozenset({"decoder_cross", "decoder_self", "deform_sampling", "backbone_self"})
TRACKER_KINDS = frozenset({"tracker_cross", "tracker_self", "slot_cross", "slot_attn"})
REFINER_FRAME_BATCH_KINDS = frozenset({"refiner_obj", "refiner_cross"})  # dim 0 = frames
_LAYER = re.compile(r"\.(\d+)(?:\.|$)")


def site_layer(site_name: str) -> int:
    """The layer index in an official module path (first numeric component), 0 when none."""
    match = _LAYER.search(site_name)
    return int(match.group(1)) if match else 0


@dataclass
class CapturedCall:
    """One call of one capture site, with where inference was when it happened."""

    site: str
    kind: str
    layer: int
    tensors: dict[str, torch.Tensor]
    stage: str = ""
    window_index: int = -1
    frames: torch.Tensor | None = None  # segmenter calls: absolute frame of each dim-0 row (host)
    tracker_frame: int = -1
    row_seq_ids: Sequence[int] = ()  # tracker calls: sequence id per query row before the frame

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class KindResult:
    """Tensors to store for one kind (floating ones may be on the device) and their manifest meta."""

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)


@dataclass
class InstanceTable:
    """The instances kept for a video (axis 0 of instance-indexed tensors) and the predictions.

    ``rows`` index the model's instance matrix (``pred_ids``; the refiner's instance axis for
    offline models). ``present`` (n, T) is False on frames where the instance's sequence had no
    entry (padding frames: analyses should mask them).
    """

    rows: list[int]
    refiner_ids: list[int]
    sequence_ids: list[int]
    present: torch.Tensor
    predictions: list[dict]

    def __len__(self) -> int:
        return len(self.rows)

    def index_vectors(self) -> dict[str, torch.Tensor]:
        """Host tensors ``instance_row``, ``refiner_id``, ``sequence_id`` (n,) and ``present`` (n, T)."""
        return {
            "instance_row": torch.tensor(self.rows, dtype=torch.int64),
            "refiner_id": torch.tensor(self.refiner_ids, dtype=torch.int64),
            "sequence_id": torch.tensor(self.sequence_ids, dtype=torch.int64),
            "present": self.present.to(torch.bool),
        }

    def subset(self, positions: Sequence[int]) -> InstanceTable:
        """The instances at ``positions`` of this table (predictions re-pointed, others dropped)."""
        positions = list(positions)
        where = {p: i for i, p in enumerate(positions)}
        preds = [{**p, "instance": where[p["instance"]]} for p in self.predictions if p["instance"] in where]
        return InstanceTable(
            rows=[self.rows[p] for p in positions],
            refiner_ids=[self.refiner_ids[p] for p in positions],
            sequence_ids=[self.sequence_ids[p] for p in positions],
            present=self.present[positions] if positions else self.present[:0],
            predictions=preds,
        )


# ----------------------------------------------------------------------------- instance table
def _row_present(info: InferenceTrace | None, row: int, num_frames: int) -> torch.Tensor:
    """(T,) bool presence of instance ``row``: the offline trace's per-row presence, else the span
    of the prediction of that row (every frame without a trace)."""
    if isinstance(info, OfflineInferenceTrace) and info.present is not None:
        return torch.as_tensor(info.present[row], dtype=torch.bool).flatten()[:num_frames].cpu()
    out = torch.ones(num_frames, dtype=torch.bool)
    for source in () if info is None else info.predictions:
        if source.row == row:
            out = torch.zeros(num_frames, dtype=torch.bool)
            out[source.start_frame : source.end_frame] = True
    return out


def instance_table(
    outputs: dict,
    info: InferenceTrace | None,
    num_frames: int,
    *,
    instances: str = "predicted",
    top_k: int | None = None,
    num_rows: int | None = None,
) -> InstanceTable:
    """Instances to keep for one video.

    ``instances="predicted"``: the distinct instance rows of the first ``top_k`` predictions (all
    predictions when None), in order of first appearance; ``"all"``: every row of the instance
    matrix (``num_rows``, or the length of the model's per-row ids).
    """
    if instances not in ("predicted", "all"):
        raise ValueError(f"instances must be 'predicted' or 'all', got {instances!r}")
    pred_rows = [int(r) for r in outputs.get("pred_ids", [])]
    scores = [float(s) for s in outputs.get("pred_scores", [])]
    labels = [int(c) for c in outputs.get("pred_labels", [])]
    if top_k is not None:
        pred_rows, scores, labels = pred_rows[:top_k], scores[:top_k], labels[:top_k]
    offline = isinstance(info, OfflineInferenceTrace)
    seq_of_row = None if info is None else list(info.sequence_ids if offline else info.row_seq_ids)
    ref_of_row = list(info.refiner_ids) if offline else None

    if instances == "all":
        n = num_rows if num_rows is not None else len(seq_of_row or ref_of_row or [])
        rows = list(range(max(n, max(pred_rows, default=-1) + 1)))
    else:
        rows = list(dict.fromkeys(pred_rows))
    position = {r: i for i, r in enumerate(rows)}

    def lookup(table: list | None, row: int) -> int:
        if table is None or row >= len(table) or table[row] is None:
            return -1
        return int(table[row])

    present = (
        torch.stack([_row_present(info, r, num_frames) for r in rows])
        if rows
        else torch.zeros((0, num_frames), dtype=torch.bool)
    )
    predictions = [
        {
            "index": i,
            "score": scores[i],
            "label": labels[i],
            "instance": position[r],
            "instance_row": r,
            "refiner_id": lookup(ref_of_row, r),
            "sequence_id": lookup(seq_of_row, r),
        }
        for i, r in enumerate(pred_rows)
    ]
    return InstanceTable(
        rows=rows,
        refiner_ids=[lookup(ref_of_row, r) for r in rows],
        sequence_ids=[lookup(seq_of_row, r) for r in rows],
        present=present,
        predictions=predictions,
    )


# ----------------------------------------------------------------------------- helpers
def _heads_label(per_head: bool) -> str:
    return "per_head" if per_head else "averaged"


def _by_layer(calls: list[CapturedCall]) -> dict[int, list[CapturedCall]]:
    groups: dict[int, list[CapturedCall]] = defaultdict(list)
    for call in calls:
        groups[call.layer].append(call)
    return dict(sorted(groups.items()))


def _select_rows(t: torch.Tensor, rows: Sequence[int], dim: int) -> torch.Tensor:
    index = torch.as_tensor(list(rows), dtype=torch.int64, device=t.device)
    return t.index_select(dim, index)


def feature_grid(num_tokens: int, padded_size: Sequence[int] | None) -> tuple[int, int] | None:
    """(H_l, W_l) of a feature level with ``num_tokens`` tokens for a padded input ``padded_size``,
    trying strides 4..128 (convolutional rounding up); None when no stride fits."""
    if not padded_size:
        return None
    h, w = int(padded_size[0]), int(padded_size[1])
    for stride in (4, 8, 16, 32, 64, 128):
        gh, gw = math.ceil(h / stride), math.ceil(w / stride)
        if gh * gw == num_tokens:
            return gh, gw
    return None


# ----------------------------------------------------------------------------- refiner
def _refiner_instance_weights(
    calls: list[CapturedCall], name: str = "weights"
) -> tuple[torch.Tensor, list[str]]:
    """Stack one call per layer: (N, L, ...) and the site names in layer order."""
    layers = _by_layer(calls)
    stacked = torch.stack([group[-1].tensors[name] for group in layers.values()], dim=1)
    return stacked, [group[-1].site for group in layers.values()]


def reduce_refiner_time(
    calls: list[CapturedCall], table: InstanceTable, video_meta: dict, per_head: bool
) -> KindResult:
    """Refiner time self-attention of the kept instances: ``weights`` (n, L, [H,] T, T)."""
    weights, sites = _refiner_instance_weights(calls)
    weights = _select_rows(weights, table.rows, 0)
    layout = (
        "(instance, layer, head, query_frame, key_frame)"
        if per_head
        else "(instance, layer, query_frame, key_frame)"
    )
    return KindResult(
        "refiner_time",
        {"weights": weights, **table.index_vectors()},
        {
            **video_meta,
            "kind": "refiner_time",
            "sites": sites,
            "heads": _heads_label(per_head),
            "layout": {"weights": layout, "present": "(instance, frame): False = padding frame"},
        },
    )


def reduce_activation(calls: list[CapturedCall], table: InstanceTable, video_meta: dict) -> KindResult:
    """Temporal pooling weights (softmax over time) of the kept instances: ``weights`` (n, T)."""
    call = calls[-1]
    w = call.tensors["weights"]  # (1, B=1, T, N, 1)
    per_instance = w.reshape(w.shape[2], w.shape[3]).transpose(0, 1)  # (N, T)
    weights = _select_rows(per_instance, table.rows, 0)
    return KindResult(
        "activation",
        {"weights": weights, **table.index_vectors()},
        {
            **video_meta,
            "kind": "activation",
            "sites": [call.site],
            "heads": "none",
            "layout": {"weights": "(instance, frame): temporal pooling weight, sums to 1 over frames"},
        },
    )


# ----------------------------------------------------------------------------- tracker
@dataclass
class TrackerRows:
    """Tracker cross-attention rows of a video, every frame concatenated (before selection)."""

    weights: torch.Tensor  # (L, R, [H,] fQ), device
    frame: torch.Tensor  # (R,) int64 host
    row: torch.Tensor  # (R,) query row within its frame
    sequence_id: torch.Tensor  # (R,) sequence the row belongs to (-1: an anchor that opened none)
    sites: list[str]


def tracker_row_table(
    calls: list[CapturedCall], rows_after: dict[int, Sequence[int]], per_head: bool
) -> TrackerRows | None:
    """Concatenate the per-frame, per-layer tracker rows.

    A row's sequence is the one it queried for (``row_seq_ids`` at call time) or, for an anchor
    row, the sequence it opened at that frame (``rows_after[frame]``, the tracker's decisions).
    """
    by_frame: dict[int, list[CapturedCall]] = defaultdict(list)
    for call in calls:
        by_frame[call.tracker_frame].append(call)
    if not by_frame:
        return None
    blocks, frames, rows, seqs = [], [], [], []
    sites: list[str] = []
    for frame in sorted(by_frame):
        group = sorted(by_frame[frame], key=lambda c: c.layer)
        mats = []
        for call in group:
            w = call.tensors["weights"][0]  # (Nq, fQ) or (H, Nq, fQ)
            mats.append(w.transpose(0, 1) if per_head else w)
        blocks.append(torch.stack(mats))  # (L, Nq, [H,] fQ)
        if not sites:
            sites = [c.site for c in group]
        nq = mats[0].shape[0]
        before = torch.full((nq,), -1, dtype=torch.int64)
        ids_in = list(group[0].row_seq_ids)[:nq]
        before[: len(ids_in)] = torch.tensor(ids_in, dtype=torch.int64)
        after = torch.full((nq,), -1, dtype=torch.int64)
        ids_out = list(rows_after.get(frame, ()))[:nq]
        if ids_out:
            after[: len(ids_out)] = torch.tensor(ids_out, dtype=torch.int64)
        frames.append(torch.full((nq,), frame, dtype=torch.int64))
        rows.append(torch.arange(nq))
        seqs.append(torch.where(before >= 0, before, after))
    return TrackerRows(
        weights=torch.cat(blocks, dim=1),
        frame=torch.cat(frames),
        row=torch.cat(rows),
        sequence_id=torch.cat(seqs),
        sites=sites,
    )


def reduce_tracker_cross(
    rows: TrackerRows,
    table: InstanceTable,
    video_meta: dict,
    per_head: bool,
    *,
    keep_all_rows: bool,
    refiner_of_sequence: dict[int, int],
) -> KindResult:
    """Tracker cross-attention rows of the kept sequences (every row with ``keep_all_rows``)."""
    if keep_all_rows:
        keep = torch.arange(rows.frame.numel())
    else:
        wanted = torch.tensor(sorted({s for s in table.sequence_ids if s >= 0}), dtype=torch.int64)
        keep = torch.nonzero(torch.isin(rows.sequence_id, wanted)).flatten()
    seq = rows.sequence_id[keep]
    refiner = torch.tensor([refiner_of_sequence.get(int(s), -1) for s in seq.tolist()], dtype=torch.int64)
    layout = "(layer, row, head, segmenter_query)" if per_head else "(layer, row, segmenter_query)"
    return KindResult(
        "tracker_cross",
        {
            "weights": _select_rows(rows.weights, keep.tolist(), 1),
            "frame": rows.frame[keep],
            "row": rows.row[keep],
            "sequence_id": seq,
            "refiner_id": refiner,
        },
        {
            **video_meta,
            "kind": "tracker_cross",
            "sites": rows.sites,
            "heads": _heads_label(per_head),
            "rows": "all" if keep_all_rows else "predicted sequences",
            "layout": {
                "weights": layout,
                "frame": "(row,) frame of the row",
                "row": "(row,) query row within that frame (track rows first, then anchors)",
                "sequence_id": "(row,) tracker sequence of the row (-1: an anchor that opened none)",
                "refiner_id": "(row,) refiner instance of that sequence (-1: none)",
            },
        },
    )


def tracker_weights_per_frame(
    rows: TrackerRows, sequence_ids: Sequence[int], frames: torch.Tensor, layer: str = "last"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights over segmenter queries per sequence and frame: (m, T', fQ), and whether a tracker row
    existed (m, T') bool. ``layer``: ``"last"`` tracker layer or ``"mean"`` over layers; per-head
    rows are averaged over heads."""
    w = rows.weights
    if w.dim() == 4:  # (L, R, H, fQ)
        w = w.mean(dim=2)
    w = w[-1] if layer == "last" else w.mean(dim=0)  # (R, fQ)
    m, tp = len(sequence_ids), frames.numel()
    out = torch.zeros((m, tp, w.shape[-1]), dtype=w.dtype, device=w.device)
    found = torch.zeros((m, tp), dtype=torch.bool)
    if m == 0 or tp == 0 or rows.frame.numel() == 0:
        return out, found
    position = torch.full((int(max(rows.frame.max(), frames.max())) + 1,), -1, dtype=torch.int64)
    position[frames] = torch.arange(tp)
    seqs = torch.tensor(list(sequence_ids), dtype=torch.int64)
    match = (rows.sequence_id[None, :] == seqs[:, None]) & (seqs[:, None] >= 0)  # (m, R)
    pred_idx, row_idx = torch.nonzero(match, as_tuple=True)
    frame_pos = position[rows.frame[row_idx]]
    ok = frame_pos >= 0
    pred_idx, row_idx, frame_pos = pred_idx[ok], row_idx[ok], frame_pos[ok]
    dev = w.device
    out[pred_idx.to(dev), frame_pos.to(dev)] = w.index_select(0, row_idx.to(dev))
    found[pred_idx, frame_pos] = True
    return out, found


# ----------------------------------------------------------------------------- decoder
def reduce_decoder_cross(
    calls: list[CapturedCall],
    rows: TrackerRows | None,
    table: InstanceTable,
    video_meta: dict,
    per_head: bool,
    *,
    padded_size: Sequence[int] | None,
    weight_layer: str = "last",
    keep_raw: bool = False,
) -> KindResult:
    """Per-prediction decoder cross-attention maps (tracker-weighted sum over segmenter queries)."""
    layers = _by_layer(calls)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, str] = {}
    levels: dict[str, dict] = {}
    frames = None
    weights = found = None
    for layer, group in layers.items():
        group = sorted(
            group,
            key=lambda c: (
                c.window_index,
                int(c.frames[0]) if c.frames is not None and c.frames.numel() else 0,
            ),
        )
        attn = torch.cat([c.tensors["weights"] for c in group], dim=0)  # (T', [H,] Q, HW)
        layer_frames = torch.cat([c.frames for c in group])
        if frames is None:
            frames = layer_frames
            if rows is not None:
                weights, found = tracker_weights_per_frame(rows, table.sequence_ids, frames, weight_layer)
            else:
                weights = torch.zeros(
                    (len(table), frames.numel(), attn.shape[-2]), dtype=attn.dtype, device=attn.device
                )
                found = torch.zeros((len(table), frames.numel()), dtype=torch.bool)
        grid = feature_grid(attn.shape[-1], padded_size)
        spatial = list(grid) if grid else [attn.shape[-1]]
        w = weights.to(attn.dtype)
        if per_head:
            maps = torch.einsum("ptq,thqx->pthx", w, attn)
        else:
            maps = torch.einsum("ptq,tqx->ptx", w, attn)
        key = f"layer{layer}"
        tensors[f"{key}.maps"] = maps.reshape(*maps.shape[:-1], *spatial)
        layout[f"{key}.maps"] = "(instance, frame, head, y, x)" if per_head else "(instance, frame, y, x)"
        if keep_raw:
            tensors[f"{key}.raw"] = attn.reshape(*attn.shape[:-1], *spatial)
            layout[f"{key}.raw"] = (
                "(frame, head, segmenter_query, y, x)" if per_head else "(frame, segmenter_query, y, x)"
            )
        levels[key] = {"site": group[0].site, "grid": spatial}
    if frames is None:
        frames = torch.zeros(0, dtype=torch.int64)
        weights = torch.zeros((len(table), 0, 0))
        found = torch.zeros((len(table), 0), dtype=torch.bool)
    tensors.update(table.index_vectors())
    tensors.update({"frames": frames, "query_weights": weights, "weighted": found})
    layout.update(
        {
            "frames": "(frame,) video frame of each frame position",
            "query_weights": f"(instance, frame, segmenter_query): tracker cross-attention row ({weight_layer} layer)",
            "weighted": "(instance, frame): a tracker row of the instance's sequence existed (else the map is 0)",
        }
    )
    return KindResult(
        "decoder_cross",
        tensors,
        {
            **video_meta,
            "kind": "decoder_cross",
            "sites": [v["site"] for v in levels.values()],
            "heads": _heads_label(per_head),
            "tracker_weight_layer": weight_layer,
            "levels": levels,
            "layout": layout,
        },
    )


# ----------------------------------------------------------------------------- other kinds
def reduce_generic(
    kind: str,
    calls: list[CapturedCall],
    table: InstanceTable,
    video_meta: dict,
    per_head: bool,
    *,
    keep_all_rows: bool,
    frames: torch.Tensor | None,
) -> KindResult:
    """Raw tensors of each site, ``<site>/<name>``; calls concatenated along dim 0 when their other
    dims agree (segmenter windows, tracker frames), else one tensor per call (``@frame<f>`` /
    ``@call<i>``). Refiner object/cross attention keeps only the kept instances' query rows (unless
    ``keep_all_rows``) and the chosen ``frames``."""
    by_site: dict[str, list[CapturedCall]] = defaultdict(list)
    for call in calls:
        by_site[call.site].append(call)
    tensors: dict[str, torch.Tensor] = {}
    for site, group in by_site.items():
        names = list(group[0].tensors)
        for name in names:
            parts = [c.tensors[name] for c in group]
            if kind in REFINER_FRAME_BATCH_KINDS:
                parts = [_refiner_rows(p, table, keep_all_rows, frames) for p in parts]
            if len({tuple(p.shape[1:]) for p in parts}) == 1:
                tensors[f"{site}/{name}"] = torch.cat(parts) if len(parts) > 1 else parts[0]
            else:
                for c, p in zip(group, parts):
                    tag = (
                        f"frame{c.tracker_frame}"
                        if c.tracker_frame >= 0 and kind in TRACKER_KINDS
                        else f"call{group.index(c)}"
                    )
                    tensors[f"{site}/{name}@{tag}"] = p
        if kind in SEGMENTER_KINDS and all(c.frames is not None for c in group):
            tensors[f"{site}/frames"] = torch.cat([c.frames for c in group])
        elif kind in TRACKER_KINDS:
            tensors[f"{site}/frames"] = torch.tensor([c.tracker_frame for c in group], dtype=torch.int64)
    if kind in REFINER_FRAME_BATCH_KINDS:
        tensors.update(table.index_vectors())
    return KindResult(
        kind,
        tensors,
        {
            **video_meta,
            "kind": kind,
            "sites": list(by_site),
            "heads": _heads_label(per_head),
            "layout": {"<site>/<name>": "the site's emitted tensor, calls concatenated along dim 0"},
        },
    )


def _refiner_rows(
    t: torch.Tensor, table: InstanceTable, keep_all_rows: bool, frames: torch.Tensor | None
) -> torch.Tensor:
    """Refiner object/cross attention (T, [H,] N, S): the chosen frames and the kept instances' rows."""
    if frames is not None:
        t = _select_rows(t, [f for f in frames.tolist() if f < t.shape[0]], 0)
    if not keep_all_rows:
        t = _select_rows(t, table.rows, t.dim() - 2)
    return t


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class ReduceRequest:
    """What the reducers may need of one video besides their kind's calls (built once per video)."""

    table: InstanceTable  # the kept instances
    map_table: InstanceTable  # the instances decoder maps are made for (``map_top_k``)
    video_meta: dict
    per_head: bool
    keep_all_rows: bool  # ``instances="all"``
    frames: torch.Tensor | None  # the chosen frames (None: all)
    padded_size: tuple[int, int] | None
    tracker_rows: TrackerRows | None  # when ``tracker_cross`` was captured
    refiner_of_sequence: dict[int, int]
    tracker_weight_layer: str = "last"
    decoder_raw: bool = False


Reducer = Callable[[str, list[CapturedCall], ReduceRequest], KindResult]


def _refiner_time(kind: str, calls: list[CapturedCall], req: ReduceRequest) -> KindResult:
    return reduce_refiner_time(calls, req.table, req.video_meta, req.per_head)


def _activation(kind: str, calls: list[CapturedCall], req: ReduceRequest) -> KindResult:
    return reduce_activation(calls, req.table, req.video_meta)


def _tracker_cross(kind: str, calls: list[CapturedCall], req: ReduceRequest) -> KindResult:
    if req.tracker_rows is None:  # no row table (a model without a tracker trace): raw calls
        return _generic(kind, calls, req)
    return reduce_tracker_cross(
        req.tracker_rows,
        req.table,
        req.video_meta,
        req.per_head,
        keep_all_rows=req.keep_all_rows,
        refiner_of_sequence=req.refiner_of_sequence,
    )


def _decoder_cross(kind: str, calls: list[CapturedCall], req: ReduceRequest) -> KindResult:
    return reduce_decoder_cross(
        calls,
        req.tracker_rows,
        req.map_table,
        req.video_meta,
        req.per_head,
        padded_size=req.padded_size,
        weight_layer=req.tracker_weight_layer,
        keep_raw=req.decoder_raw,
    )


def _generic(kind: str, calls: list[CapturedCall], req: ReduceRequest) -> KindResult:
    return reduce_generic(
        kind, calls, req.table, req.video_meta, req.per_head, keep_all_rows=req.keep_all_rows, frames=req.frames
    )


REDUCERS: dict[str, Reducer] = {
    "refiner_time": _refiner_time,
    "activation": _activation,
    "tracker_cross": _tracker_cross,
    "decoder_cross": _decoder_cross,
}
"""Kind -> its reducer; a kind without an entry keeps its raw tensors (:func:`reduce_generic`)."""


def reduce_kind(kind: str, calls: list[CapturedCall], request: ReduceRequest) -> KindResult:
    """Keep what ``request`` asks of one kind's calls (the kind's registered reducer)."""
    return REDUCERS.get(kind, _generic)(kind, calls, request)
