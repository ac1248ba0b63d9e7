"""Per-video memory of the DAQ tracker: live sequences as tensor rows plus per-frame records.

The official tracker keeps one Python object per sequence with lists of per-frame tensors and a
random id. Here the same information is laid out for tensor ops:

* the *live* sequences (those still tracked) are rows of a few tensors on the model's device, in
  the official order (surviving sequences first, in their previous order, then the sequences
  created at this frame, in query-row order): their ids, last tracker output, similarity-guided
  position, the last valid position embeddings (up to ``pos_cache - 1``) and the consecutive
  invalid count;
* every frame leaves one :class:`FrameRecord` holding, for the sequences that stored this frame,
  their ids, validity, logits, embeddings and masks, all on the model's device. At the end of a
  segmenter window (:meth:`SequenceMemory.end_window`) the window's masks move to ``store_device``
  in one copy (see :data:`AUTO`), in the dtype they were computed in (lossless; they are widened
  to float32 when materialised);
* per-sequence scalars (start frame, stored frames, invalid count, dead flag, final fused
  position) live in small tables on the model's device, indexed by the sequence id.

Host synchronisation: a frame reads two integers from the device (how many live sequences
survive and how many are created), because the next frame's query count depends on them; that
is the only device-to-host read per frame. Records are read back to the host once per
:meth:`SequenceMemory.collect`, masks once per window (or never, when kept on the device).

Sequence ids are creation indices within the video (0, 1, 2, ...), not random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUTO = "auto"  # store device: keep masks on the model's device while they fit (see MaskStore)
DEVICE_SHARE = 0.25  # "auto" keeps masks on the device while they use under this share of free memory


@dataclass
class FrameRecord:
    """What one frame stored: rows are the sequences that appended this frame, in live order."""

    frame: int
    seq_ids: torch.Tensor  # (n,) int64, device
    valid: torch.Tensor  # (n,) bool, device
    logits: torch.Tensor  # (n, K+1), device
    embeds: torch.Tensor  # (n, C), device
    masks: torch.Tensor  # (n, h, w), device until the window ends, then the store device

    @property
    def size(self) -> int:
        return int(self.seq_ids.shape[0])


@dataclass
class FrameUpdate:
    """The tracker's results for one frame, handed to :meth:`SequenceMemory.update`."""

    frame: int
    outputs: torch.Tensor  # (Nq, C) last-layer tracker outputs (before decoder_norm)
    logits: torch.Tensor  # (Nq, K+1)
    masks: torch.Tensor  # (Nq, h, w) mask logits
    positions: torch.Tensor  # (Nq, C) pos_embed of the mask-pooled features under the tracker's masks
    valid: torch.Tensor  # (Nq,) bool


def true_rows(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` True entries of ``mask``, ascending, without a host read."""
    return torch.nonzero_static(mask, size=count).flatten()


class MaskStore:
    """Where the per-frame masks of finished windows go: one copy per window.

    ``store_device`` "cpu" (the official ``to_store="cpu"``) copies each window's masks into one
    pinned host buffer without blocking (a CUDA event marks the copy; :meth:`wait` waits for it
    before the host reads them). :data:`AUTO` keeps them on the model's device while the masks kept
    there use under :data:`DEVICE_SHARE` of the device's free memory, and otherwise falls back to
    the host. A CPU model keeps them where they are.
    """

    def __init__(self, store_device: str | torch.device = AUTO) -> None:
        self.store_device = store_device
        self.kept_bytes = 0  # masks kept on the device in this video
        self._event = None

    def reset(self) -> None:
        self.kept_bytes = 0

    def target(self, block: torch.Tensor) -> torch.device:
        """Where a window's mask block should live."""
        if str(self.store_device) != AUTO:
            return torch.device(self.store_device)
        if block.device.type != "cuda":
            return block.device
        free, _ = torch.cuda.mem_get_info(block.device)
        if self.kept_bytes + block.nbytes < DEVICE_SHARE * (free + self.kept_bytes):
            return block.device
        return torch.device("cpu")

    def place(self, block: torch.Tensor) -> torch.Tensor:
        """``block`` on its store device: the same tensor, or a copy made once."""
        target = self.target(block)
        if target == block.device:
            self.kept_bytes += block.nbytes if block.device.type == "cuda" else 0
            return block
        if block.device.type == "cuda" and target.type == "cpu":
            host = torch.empty(block.shape, dtype=block.dtype, pin_memory=True)
            host.copy_(block, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(block.device))
            return host
        return block.to(target)

    def wait(self) -> None:
        """Wait for the pending non-blocking copies before the host reads the masks."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None


class SequenceMemory:
    """Sequences of one video (or one long video fed in several calls with ``keep``)."""

    def __init__(self, hidden_dim: int, kick_out_frames: int = 8, pos_cache: int = 10, store_device=AUTO):
        self.hidden_dim = hidden_dim
        self.kick_out_frames = kick_out_frames
        self.history = pos_cache - 1  # previous valid positions compared with a new one
        self.mask_store = MaskStore(store_device)
        self.reset()

    @property
    def store_device(self) -> str | torch.device:
        return self.mask_store.store_device

    @store_device.setter
    def store_device(self, device: str | torch.device) -> None:
        self.mask_store.store_device = device

    # ------------------------------------------------------------------ state
    def reset(self, device: torch.device | str = "cpu") -> None:
        """Forget every sequence (start of a video); tables live on ``device``."""
        self.records: list[FrameRecord] = []
        self._placed = 0  # records whose masks are on the store device already
        self.mask_store.reset()
        self.live = torch.zeros(0, dtype=torch.int64, device=device)  # (q',) sequence ids
        self.queries: torch.Tensor | None = None  # (q', C)
        self.fused_pos: torch.Tensor | None = None  # (q', C)
        self.pos_hist: torch.Tensor | None = None  # (q', history, C), newest last
        self.pos_count: torch.Tensor | None = None  # (q',) int64, valid entries of pos_hist
        self.live_invalid = torch.zeros(0, dtype=torch.int64, device=device)
        self.start_frame = torch.zeros(0, dtype=torch.int64, device=device)
        self.num_stored = torch.zeros(0, dtype=torch.int64, device=device)
        self.invalid_frames = torch.zeros(0, dtype=torch.int64, device=device)
        self.dead = torch.zeros(0, dtype=torch.bool, device=device)
        self.released = torch.zeros(0, dtype=torch.bool, device=device)  # dropped from the hub after a collection
        self.final_pos: torch.Tensor | None = None  # (S, C) similarity-guided position of every sequence
        self._num_sequences = 0

    @property
    def num_sequences(self) -> int:
        return self._num_sequences

    @property
    def num_live(self) -> int:
        return int(self.live.shape[0])

    @property
    def live_ids(self) -> list[int]:
        """Live sequence ids in row order (reads the device: for tests and debugging)."""
        return self.live.tolist()

    def track_queries(self, like: torch.Tensor) -> torch.Tensor:
        """Live sequences' last outputs (q', 1, C); empty (0, 1, C) like ``like`` when none."""
        if self.queries is None or not self.num_live:
            return like.new_zeros((0, 1, self.hidden_dim))
        return self.queries.unsqueeze(1)

    def track_positions(self, like: torch.Tensor) -> torch.Tensor:
        """Live sequences' similarity-guided positions (q', 1, C)."""
        if self.fused_pos is None or not self.num_live:
            return like.new_zeros((0, 1, self.hidden_dim))
        return self.fused_pos.unsqueeze(1)

    # ------------------------------------------------------------------ update
    def update(self, upd: FrameUpdate) -> torch.Tensor:
        """Apply one frame's decisions; returns the sequence id of each query row (-1 = none), on
        the device.

        Rows ``k < q'`` (``q'`` = live sequences before the frame) continue the live sequences; a
        live sequence that is invalid keeps appending until ``kick_out_frames`` consecutive invalid
        frames make it dead. Valid rows ``k >= q'`` open new sequences.
        """
        device = upd.outputs.device
        if self.start_frame.device != device:
            self._move_tables(device)
        num_rows = upd.outputs.shape[0]
        # Row k < q' continues live sequence k. (Only fish-dvis' capped track queries can leave
        # fewer rows than live sequences; the sequences past the last row then stop, undead.)
        n_live = min(self.num_live, num_rows)
        valid = upd.valid.detach().to(device=device, dtype=torch.bool)
        prev_inv = self.live_invalid[:n_live]
        inv = torch.where(valid[:n_live], torch.zeros_like(prev_inv), prev_inv + 1)
        dies = inv >= self.kick_out_frames
        old_ids = self.live[:n_live]
        self.invalid_frames[old_ids] = inv
        self.dead[old_ids] = dies  # live sequences are not dead yet
        kept, new = ~dies, valid[n_live:]
        n_kept, n_new = torch.stack([kept.sum(), new.sum()]).tolist()  # the frame's one host read
        rows = torch.cat([true_rows(kept, n_kept), true_rows(new, n_new) + n_live])

        first_id = self._num_sequences
        new_ids = torch.arange(first_id, first_id + n_new, dtype=torch.int64, device=device)
        self._grow(n_new, upd.frame, device)
        stored_ids = torch.cat([old_ids.index_select(0, rows[:n_kept]), new_ids])
        stored_valid = valid.index_select(0, rows)
        self.num_stored[stored_ids] += 1

        self.records.append(
            FrameRecord(
                frame=upd.frame,
                seq_ids=stored_ids,
                valid=stored_valid,
                logits=upd.logits.index_select(0, rows),
                embeds=upd.outputs.index_select(0, rows),
                masks=upd.masks.index_select(0, rows),
            )
        )
        self._update_live(upd, n_live, n_kept, rows, stored_ids, stored_valid)
        self.live = stored_ids
        self.live_invalid = torch.cat(
            [inv.index_select(0, rows[:n_kept]), torch.zeros(n_new, dtype=torch.int64, device=device)]
        )
        row_ids = torch.full((num_rows,), -1, dtype=torch.int64, device=device)
        row_ids[rows] = stored_ids
        return row_ids

    def end_window(self) -> None:
        """Move the masks of the records since the last call to the store device, in one copy."""
        pending = self.records[self._placed :]
        self._placed = len(self.records)
        if not pending:
            return
        block = self.mask_store.place(torch.cat([r.masks for r in pending]))
        for rec, masks in zip(pending, block.split([r.size for r in pending])):
            rec.masks = masks

    def _move_tables(self, device: torch.device) -> None:
        """Per-sequence tables and live state to ``device`` (the first frame of a model's video)."""
        for name in ("live", "live_invalid", "start_frame", "num_stored", "invalid_frames", "dead", "released"):
            setattr(self, name, getattr(self, name).to(device))
        for name in ("queries", "fused_pos", "pos_hist", "pos_count", "final_pos"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))

    def _grow(self, count: int, frame: int, device: torch.device) -> None:
        """Add ``count`` new sequences starting at ``frame`` to the per-sequence tables."""

        def extend(table: torch.Tensor, value) -> torch.Tensor:
            return torch.cat([table, torch.full((count,), value, dtype=table.dtype, device=device)])

        self.start_frame = extend(self.start_frame, frame)
        self.num_stored = extend(self.num_stored, 0)
        self.invalid_frames = extend(self.invalid_frames, 0)
        self.dead = extend(self.dead, False)
        self.released = extend(self.released, False)
        self._num_sequences += count

    def _update_live(
        self,
        upd: FrameUpdate,
        n_live: int,
        n_kept: int,
        rows: torch.Tensor,
        stored_ids: torch.Tensor,
        stored_valid: torch.Tensor,
    ) -> None:
        """New live tensors: surviving rows (positions fused where valid) then the new rows."""
        device = upd.outputs.device
        positions = upd.positions.index_select(0, rows)  # (q'', C), one per stored row
        n_new = positions.shape[0] - n_kept
        if n_live:
            kept = rows[:n_kept]
            fused = self.fused_pos[:n_live].index_select(0, kept)
            hist = self.pos_hist[:n_live].index_select(0, kept)
            count = self.pos_count[:n_live].index_select(0, kept)
        else:
            fused = positions.new_zeros((0, self.hidden_dim))
            hist = positions.new_zeros((0, self.history, self.hidden_dim))
            count = torch.zeros(0, dtype=torch.int64, device=device)
        fused = torch.cat([fused.to(positions.dtype), positions[positions.shape[0] - n_new :]])
        hist = torch.cat(
            [hist.to(positions.dtype), positions.new_zeros((n_new, self.history, self.hidden_dim))]
        )
        count = torch.cat([count, torch.zeros(n_new, dtype=torch.int64, device=device)])

        valid = stored_valid
        fused = torch.where(valid[:, None], self._fuse(fused, hist, count, positions), fused)
        pushed = torch.cat([hist[:, 1:], positions[:, None]], dim=1)
        hist = torch.where(valid[:, None, None], pushed, hist)
        count = torch.where(valid, (count + 1).clamp(max=self.history), count)

        self.queries = upd.outputs.index_select(0, rows)
        self.fused_pos, self.pos_hist, self.pos_count = fused, hist, count
        table = fused.new_zeros((self.num_sequences, self.hidden_dim))
        if self.final_pos is not None and self.final_pos.shape[0]:
            table[: self.final_pos.shape[0]] = self.final_pos
        table[stored_ids] = fused
        self.final_pos = table

    @staticmethod
    def _fuse(
        fused: torch.Tensor, hist: torch.Tensor, count: torch.Tensor, new: torch.Tensor
    ) -> torch.Tensor:
        """Similarity-guided fusion: ``(1-b)*fused + b*new``, b = max(0, mean cos(new, previous)).

        A sequence with no previous position takes ``new`` as is.
        """
        slots = hist.shape[1]
        present = torch.arange(slots, device=hist.device)[None, :] >= (slots - count)[:, None]  # (q, history)
        cos = torch.einsum("qhc,qc->qh", F.normalize(hist, dim=-1), F.normalize(new, dim=-1))
        cos = torch.where(present, cos, torch.zeros_like(cos))
        sim = cos.sum(dim=1) / count.clamp(min=1).to(cos.dtype)
        beta = sim.clamp(min=0)[:, None]
        blended = (1 - beta).to(new.dtype) * fused + beta.to(new.dtype) * new
        return torch.where((count > 0)[:, None], blended, new)

    # ------------------------------------------------------------------ read-out
    def collect(self, first_frame: int, num_frames: int, noise_frame_num: int) -> CollectedSequences:
        """The sequences that enter the video result, in creation order.

        A sequence is dropped when it has fewer than ``noise_frame_num`` stored frames, unless it
        reaches the last frame of this call (``first_frame + num_frames``); also when it stored
        no frame inside ``[first_frame, first_frame + num_frames)`` or was released by an earlier
        call. Logits are the mean of the raw per-frame logits inside that range. The bookkeeping
        comes to the host in one copy.
        """
        self.end_window()
        self.mask_store.wait()
        records = [r for r in self.records if first_frame <= r.frame < first_frame + num_frames]
        total, device = self.num_sequences, self.start_frame.device
        in_range = torch.zeros(total, dtype=torch.int64, device=device)
        ids = torch.cat([r.seq_ids for r in records]) if records else in_range[:0]
        in_range.index_add_(0, ids, torch.ones_like(ids))
        reaches_end = self.start_frame + self.num_stored >= first_frame + num_frames
        keep = ~self.released & (in_range > 0) & ((self.num_stored >= noise_frame_num) | reaches_end)
        valid = torch.cat([r.valid for r in records]) if records else keep[:0]
        host = torch.cat([keep.long(), self.start_frame, self.dead.long(), ids, valid.long()]).cpu()
        keep_h, start_h, dead_h, ids_h, valid_h = host.split([total, total, total, ids.numel(), ids.numel()])
        seq_ids = torch.nonzero(keep_h).flatten()

        logits = None
        if records:
            ref = records[0].logits
            sums = torch.zeros((total, ref.shape[1]), dtype=torch.float32, device=ref.device)
            sums.index_add_(0, ids, torch.cat([r.logits for r in records]).float())
            counts = in_range.to(torch.float32).clamp(min=1)[:, None]
            logits = (sums / counts)[seq_ids.to(ref.device, non_blocking=True)].to(ref.dtype)
        positions = None
        if self.final_pos is not None:
            positions = self.final_pos[seq_ids.to(self.final_pos.device, non_blocking=True)]
        sizes = [r.size for r in records]
        return CollectedSequences(
            seq_ids=seq_ids,
            start_frames=start_h[seq_ids],
            dead=dead_h[seq_ids].bool(),
            logits=logits,
            positions=positions,
            first_frame=first_frame,
            num_frames=num_frames,
            records=records,
            num_sequences=total,
            record_ids=list(ids_h.split(sizes)),
            record_valid=list(valid_h.bool().split(sizes)),
        )

    def end_call(self) -> None:
        """After a result was collected: release dead sequences and drop the per-frame records.

        Live sequences stay, so a following call with ``resume`` (long videos fed in parts)
        continues them; their earlier frames are not needed again.
        """
        self.released |= self.dead
        self.records = []
        self._placed = 0
        self.mask_store.reset()

    def hub_summary(self) -> list[dict]:
        """Every sequence not yet released, as the golden ``tracker_trace`` hub entries (reads the
        device: for tests and debugging)."""
        appearance: dict[int, list[bool]] = {}
        for rec in self.records:
            for sid, ok in zip(rec.seq_ids.tolist(), rec.valid.tolist()):
                appearance.setdefault(sid, []).append(bool(ok))
        start, stored, invalid = self.start_frame.tolist(), self.num_stored.tolist(), self.invalid_frames.tolist()
        dead, released = self.dead.tolist(), self.released.tolist()
        return [
            {
                "seq": sid,
                "start_frame": start[sid],
                "num_stored_frames": stored[sid],
                "invalid_frames": invalid[sid],
                "dead": dead[sid],
                "appearance": appearance.get(sid, []),
            }
            for sid in range(self.num_sequences)
            if not released[sid]
        ]


@dataclass
class CollectedSequences:
    """Sequences selected for a video result (rows in creation order) and their per-frame data.

    Masks and padded embeddings are materialised on request, for chosen rows only, so a long video
    never needs the full (n, T, h, w) mask tensor unless asked for. ``record_ids``/``record_valid``
    are the records' sequence ids and validity on the host (read once by
    :meth:`SequenceMemory.collect`).
    """

    seq_ids: torch.Tensor  # (n,) int64, host
    start_frames: torch.Tensor  # (n,) int64, host
    dead: torch.Tensor  # (n,) bool, host
    logits: torch.Tensor | None  # (n, K+1): mean raw logits over the stored frames in range
    positions: torch.Tensor | None  # (n, C): final similarity-guided position
    first_frame: int
    num_frames: int
    records: list[FrameRecord]
    num_sequences: int
    record_ids: list[torch.Tensor]  # per record: (n_r,) int64 sequence ids, host
    record_valid: list[torch.Tensor]  # per record: (n_r,) bool, host

    def __len__(self) -> int:
        return int(self.seq_ids.numel())

    def _lookup(self, rows: torch.Tensor | None) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """Map sequence id -> position among the distinct ``rows`` (all rows when None); also the
        index that expands the distinct rows back to ``rows`` (None when no expansion is needed)."""
        if rows is None:
            rows, expand = torch.arange(len(self)), None
        else:
            rows, expand = torch.unique(torch.as_tensor(rows, dtype=torch.int64).cpu(), return_inverse=True)
        lookup = torch.full((self.num_sequences,), -1, dtype=torch.int64)
        lookup[self.seq_ids[rows]] = torch.arange(rows.numel())
        return lookup, rows.numel(), expand

    def _scatter_plan(
        self, lookup: torch.Tensor, device: torch.device
    ) -> list[tuple[FrameRecord, int, torch.Tensor, torch.Tensor]]:
        """Per record with selected rows: ``(record, frame offset, source rows, destination rows)``,
        the index tensors on ``device`` (built on the host, uploaded in one non-blocking copy)."""
        picked, sources, dests = [], [], []
        for rec, ids in zip(self.records, self.record_ids):
            pos = lookup[ids]
            src = torch.nonzero(pos >= 0).flatten()
            if src.numel():
                picked.append(rec)
                sources.append(src)
                dests.append(pos[src])
        if not picked:
            return []
        sizes = [s.numel() for s in sources]
        src_all, dst_all = torch.cat(sources + dests).to(device, non_blocking=True).split([sum(sizes)] * 2)
        return [
            (rec, rec.frame - self.first_frame, src, dst)
            for rec, src, dst in zip(picked, src_all.split(sizes), dst_all.split(sizes))
        ]

    def masks(self, rows: torch.Tensor | None = None, fill: float = -1e4) -> torch.Tensor:
        """(len(rows), T, h, w) float32 mask logits on the store device, ``fill`` where not stored.
        ``rows`` may repeat (one sequence selected with several classes)."""
        lookup, n, expand = self._lookup(rows)
        if not self.records:
            raise ValueError("no frame records to build masks from")
        ref = self.records[0].masks
        out = torch.full((n, self.num_frames, *ref.shape[1:]), fill, dtype=torch.float32, device=ref.device)
        for rec, t, src, dst in self._scatter_plan(lookup, ref.device):
            out[dst, t] = rec.masks.index_select(0, src).float()
        return out if expand is None else out[expand.to(out.device)]

    def frame_table(self, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(stored, valid)``, both (len(rows), T) bool on the host: which frames each row stored
        and on which of them it was valid (the official ``appearance``)."""
        lookup, n, expand = self._lookup(rows)
        stored = torch.zeros((n, self.num_frames), dtype=torch.bool)
        valid = torch.zeros((n, self.num_frames), dtype=torch.bool)
        for rec, ids, ok in zip(self.records, self.record_ids, self.record_valid):
            pos = lookup[ids]
            sel = pos >= 0
            stored[pos[sel], rec.frame - self.first_frame] = True
            valid[pos[sel], rec.frame - self.first_frame] = ok[sel]
        if expand is not None:
            stored, valid = stored[expand], valid[expand]
        return stored, valid

    def frame_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, stored)``: (n, T, K+1) float32 per-frame tracker logits on the host (0 where a
        row stored nothing) and the (n, T) bool table of stored frames, rows in creation order.
        Gathered on the device, read back in one copy."""
        lookup, n, _ = self._lookup(None)
        k1 = self.records[0].logits.shape[-1] if self.records else 1
        device = self.records[0].logits.device if self.records else torch.device("cpu")
        out = torch.zeros((n, self.num_frames, k1), dtype=torch.float32, device=device)
        for rec, t, src, dst in self._scatter_plan(lookup, device):
            out[dst, t] = rec.logits.index_select(0, src).float()
        stored, _ = self.frame_table(None)
        return out.cpu(), stored

    def embeds(self) -> torch.Tensor:
        """(n, T, C) last-layer tracker outputs per frame; frames a sequence did not store hold its
        final similarity-guided position (the official refiner padding)."""
        if self.positions is None or not self.records:
            raise ValueError("no sequences to read embeddings from")
        lookup, n, _ = self._lookup(None)
        dtype = torch.promote_types(self.positions.dtype, self.records[0].embeds.dtype)
        out = self.positions[:, None, :].to(dtype).repeat(1, self.num_frames, 1)
        for rec, t, src, dst in self._scatter_plan(lookup, out.device):
            out[dst, t] = rec.embeds.index_select(0, src).to(out.dtype)
        return out
