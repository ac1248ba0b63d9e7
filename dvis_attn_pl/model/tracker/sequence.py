"""Per-video memory of the DAQ tracker: live sequences as tensor rows plus per-frame records.

The official tracker keeps one Python object per sequence with lists of per-frame tensors and a
random id. Here the same information is laid out for tensor ops:

* the *live* sequences (those still tracked) are rows of a few tensors on the model's device, in
  the official order (surviving sequences first, in their previous order, then the sequences
  created at this frame, in query-row order): last tracker output, similarity-guided position,
  the last valid position embeddings (up to ``pos_cache - 1``) and the consecutive invalid count;
* every frame leaves one :class:`FrameRecord` holding, for the sequences that stored this frame,
  their ids, validity, logits, embeddings and masks. Masks are offloaded to ``store_device``
  (the host by default, like the official ``to_store="cpu"``) with one copy per frame, in the
  dtype they were computed in (lossless; they are widened to float32 when materialised);
* per-sequence scalars (start frame, stored frames, invalid count, dead flag, final fused
  position) live in small tables indexed by the sequence id.

Sequence ids are creation indices within the video (0, 1, 2, ...), not random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FrameRecord:
    """What one frame stored: rows are the sequences that appended this frame, in live order."""

    frame: int
    seq_ids: torch.Tensor  # (n,) int64, host
    valid: torch.Tensor  # (n,) bool, host
    logits: torch.Tensor  # (n, K+1), device
    embeds: torch.Tensor  # (n, C), device
    masks: torch.Tensor  # (n, h, w), store device


@dataclass
class FrameUpdate:
    """The tracker's results for one frame, handed to :meth:`SequenceMemory.update`."""

    frame: int
    outputs: torch.Tensor  # (Nq, C) last-layer tracker outputs (before decoder_norm)
    logits: torch.Tensor  # (Nq, K+1)
    masks: torch.Tensor  # (Nq, h, w) mask logits
    positions: torch.Tensor  # (Nq, C) pos_embed of the mask-pooled features under the tracker's masks
    valid: torch.Tensor  # (Nq,) bool


class SequenceMemory:
    """Sequences of one video (or one long video fed in several calls with ``keep``)."""

    def __init__(self, hidden_dim: int, kick_out_frames: int = 8, pos_cache: int = 10, store_device="cpu"):
        self.hidden_dim = hidden_dim
        self.kick_out_frames = kick_out_frames
        self.history = pos_cache - 1  # previous valid positions compared with a new one
        self.store_device = torch.device(store_device)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every sequence (start of a video)."""
        self.records: list[FrameRecord] = []
        self.live_ids: list[int] = []
        self.queries: torch.Tensor | None = None  # (q', C)
        self.fused_pos: torch.Tensor | None = None  # (q', C)
        self.pos_hist: torch.Tensor | None = None  # (q', history, C), newest last
        self.pos_count: torch.Tensor | None = None  # (q',) int64, valid entries of pos_hist
        self.live_invalid: torch.Tensor = torch.zeros(0, dtype=torch.int64)  # host
        self.start_frame = torch.zeros(0, dtype=torch.int64)
        self.num_stored = torch.zeros(0, dtype=torch.int64)
        self.invalid_frames = torch.zeros(0, dtype=torch.int64)
        self.dead = torch.zeros(0, dtype=torch.bool)
        self.released = torch.zeros(0, dtype=torch.bool)  # dropped from the hub after a collection
        self.final_pos: torch.Tensor | None = None  # (S, C) similarity-guided position of every sequence

    @property
    def num_sequences(self) -> int:
        return int(self.start_frame.numel())

    @property
    def num_live(self) -> int:
        return len(self.live_ids)

    def track_queries(self, like: torch.Tensor) -> torch.Tensor:
        """Live sequences' last outputs (q', 1, C); empty (0, 1, C) like ``like`` when none."""
        if self.queries is None or not self.live_ids:
            return like.new_zeros((0, 1, self.hidden_dim))
        return self.queries.unsqueeze(1)

    def track_positions(self, like: torch.Tensor) -> torch.Tensor:
        """Live sequences' similarity-guided positions (q', 1, C)."""
        if self.fused_pos is None or not self.live_ids:
            return like.new_zeros((0, 1, self.hidden_dim))
        return self.fused_pos.unsqueeze(1)

    # ------------------------------------------------------------------ update
    def update(self, upd: FrameUpdate) -> list[int]:
        """Apply one frame's decisions; returns the sequence id of each query row (-1 = none).

        Rows ``k < q'`` (``q'`` = live sequences before the frame) continue the live sequences; a
        live sequence that is invalid keeps appending until ``kick_out_frames`` consecutive invalid
        frames make it dead. Valid rows ``k >= q'`` open new sequences.
        """
        num_rows = upd.outputs.shape[0]
        # Row k < q' continues live sequence k. (Only fish-dvis' capped track queries can leave
        # fewer rows than live sequences; the sequences past the last row then stop, undead.)
        n_live = min(self.num_live, num_rows)
        valid = upd.valid.detach().to("cpu", torch.bool)
        rows = torch.arange(num_rows)

        prev_inv = self.live_invalid[:n_live]
        inv = torch.where(valid[:n_live], torch.zeros_like(prev_inv), prev_inv + 1)
        dies = inv >= self.kick_out_frames
        old_ids = torch.as_tensor(self.live_ids[:n_live], dtype=torch.int64)
        if n_live:
            self.invalid_frames[old_ids] = inv
            self.dead[old_ids[dies]] = True
        new_rows = rows[n_live:][valid[n_live:]]
        first_id = self.num_sequences
        new_ids = torch.arange(first_id, first_id + new_rows.numel(), dtype=torch.int64)
        self._grow(new_rows.numel(), upd.frame)

        kept_old = rows[:n_live][~dies]
        stored_rows = torch.cat([kept_old, new_rows])
        stored_ids = torch.cat([old_ids[~dies], new_ids])
        stored_valid = valid[stored_rows]
        self.num_stored[stored_ids] += 1

        dev_rows = stored_rows.to(upd.outputs.device)
        self.records.append(
            FrameRecord(
                frame=upd.frame,
                seq_ids=stored_ids,
                valid=stored_valid,
                logits=upd.logits.index_select(0, dev_rows),
                embeds=upd.outputs.index_select(0, dev_rows),
                masks=upd.masks.index_select(0, dev_rows).to(self.store_device),
            )
        )
        self._update_live(upd, n_live, ~dies, dev_rows, stored_ids, stored_valid)
        self.live_ids = stored_ids.tolist()
        self.live_invalid = torch.cat([inv[~dies], torch.zeros(new_rows.numel(), dtype=torch.int64)])
        row_ids = torch.full((num_rows,), -1, dtype=torch.int64)
        row_ids[stored_rows] = stored_ids
        return row_ids.tolist()

    def _grow(self, count: int, frame: int) -> None:
        """Add ``count`` new sequences starting at ``frame`` to the per-sequence tables."""
        self.start_frame = torch.cat([self.start_frame, torch.full((count,), frame, dtype=torch.int64)])
        self.num_stored = torch.cat([self.num_stored, torch.zeros(count, dtype=torch.int64)])
        self.invalid_frames = torch.cat([self.invalid_frames, torch.zeros(count, dtype=torch.int64)])
        self.dead = torch.cat([self.dead, torch.zeros(count, dtype=torch.bool)])
        self.released = torch.cat([self.released, torch.zeros(count, dtype=torch.bool)])

    def _update_live(
        self,
        upd: FrameUpdate,
        n_live: int,
        keep_old: torch.Tensor,
        dev_rows: torch.Tensor,
        stored_ids: torch.Tensor,
        stored_valid: torch.Tensor,
    ) -> None:
        """New live tensors: surviving rows (positions fused where valid) then the new rows."""
        device = upd.outputs.device
        positions = upd.positions.index_select(0, dev_rows)  # (q'', C), one per stored row
        n_new = positions.shape[0] - int(keep_old.sum())
        if n_live:
            keep_dev = keep_old.to(device)
            fused = self.fused_pos[:n_live][keep_dev]
            hist = self.pos_hist[:n_live][keep_dev]
            count = self.pos_count[:n_live][keep_dev]
        else:
            fused = positions.new_zeros((0, self.hidden_dim))
            hist = positions.new_zeros((0, self.history, self.hidden_dim))
            count = torch.zeros(0, dtype=torch.int64, device=device)
        fused = torch.cat([fused.to(positions.dtype), positions[positions.shape[0] - n_new :]])
        hist = torch.cat(
            [hist.to(positions.dtype), positions.new_zeros((n_new, self.history, self.hidden_dim))]
        )
        count = torch.cat([count, torch.zeros(n_new, dtype=torch.int64, device=device)])

        valid = stored_valid.to(device)
        fused = torch.where(valid[:, None], self._fuse(fused, hist, count, positions), fused)
        pushed = torch.cat([hist[:, 1:], positions[:, None]], dim=1)
        hist = torch.where(valid[:, None, None], pushed, hist)
        count = torch.where(valid, (count + 1).clamp(max=self.history), count)

        self.queries = upd.outputs.index_select(0, dev_rows)
        self.fused_pos, self.pos_hist, self.pos_count = fused, hist, count
        table = fused.new_zeros((self.num_sequences, self.hidden_dim))
        if self.final_pos is not None and self.final_pos.shape[0]:
            table[: self.final_pos.shape[0]] = self.final_pos
        table[stored_ids.to(device)] = fused
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
        call. Logits are the mean of the raw per-frame logits inside that range.
        """
        records = [r for r in self.records if first_frame <= r.frame < first_frame + num_frames]
        total = self.num_sequences
        in_range = torch.zeros(total, dtype=torch.int64)
        for rec in records:
            in_range.index_add_(0, rec.seq_ids, torch.ones_like(rec.seq_ids))
        reaches_end = self.start_frame + self.num_stored >= first_frame + num_frames
        keep = ~self.released & (in_range > 0) & ((self.num_stored >= noise_frame_num) | reaches_end)
        seq_ids = torch.nonzero(keep).flatten()

        logits = None
        if records:
            ref = records[0].logits
            ids = torch.cat([r.seq_ids for r in records]).to(ref.device)
            sums = torch.zeros((total, ref.shape[1]), dtype=torch.float32, device=ref.device)
            sums.index_add_(0, ids, torch.cat([r.logits for r in records]).float())
            counts = in_range.to(ref.device, torch.float32).clamp(min=1)[:, None]
            logits = (sums / counts)[seq_ids.to(ref.device)].to(ref.dtype)
        positions = None if self.final_pos is None else self.final_pos[seq_ids.to(self.final_pos.device)]
        return CollectedSequences(
            seq_ids=seq_ids,
            start_frames=self.start_frame[seq_ids],
            dead=self.dead[seq_ids],
            logits=logits,
            positions=positions,
            first_frame=first_frame,
            num_frames=num_frames,
            records=records,
            num_sequences=total,
        )

    def end_call(self) -> None:
        """After a result was collected: release dead sequences and drop the per-frame records.

        Live sequences stay, so a following call with ``resume`` (long videos fed in parts)
        continues them; their earlier frames are not needed again.
        """
        self.released |= self.dead
        self.records = []

    def hub_summary(self) -> list[dict]:
        """Every sequence not yet released, as the golden ``tracker_trace`` hub entries."""
        appearance: dict[int, list[bool]] = {}
        for rec in self.records:
            for sid, ok in zip(rec.seq_ids.tolist(), rec.valid.tolist()):
                appearance.setdefault(sid, []).append(bool(ok))
        return [
            {
                "seq": sid,
                "start_frame": int(self.start_frame[sid]),
                "num_stored_frames": int(self.num_stored[sid]),
                "invalid_frames": int(self.invalid_frames[sid]),
                "dead": bool(self.dead[sid]),
                "appearance": appearance.get(sid, []),
            }
            for sid in range(self.num_sequences)
            if not self.released[sid]
        ]


@dataclass
class CollectedSequences:
    """Sequences selected for a video result (rows in creation order) and their per-frame data.

    Masks and padded embeddings are materialised on request, for chosen rows only, so a long video
    never needs the full (n, T, h, w) mask tensor unless asked for.
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

    def masks(self, rows: torch.Tensor | None = None, fill: float = -1e4) -> torch.Tensor:
        """(len(rows), T, h, w) float32 mask logits on the store device, ``fill`` where not stored.
        ``rows`` may repeat (one sequence selected with several classes)."""
        lookup, n, expand = self._lookup(rows)
        if not self.records:
            raise ValueError("no frame records to build masks from")
        ref = self.records[0].masks
        out = torch.full((n, self.num_frames, *ref.shape[1:]), fill, dtype=torch.float32, device=ref.device)
        for rec in self.records:
            pos = lookup[rec.seq_ids]
            sel = pos >= 0
            if bool(sel.any()):
                out[pos[sel].to(ref.device), rec.frame - self.first_frame] = rec.masks[
                    sel.to(ref.device)
                ].float()
        return out if expand is None else out[expand.to(out.device)]

    def frame_table(self, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(stored, valid)``, both (len(rows), T) bool on the host: which frames each row stored
        and on which of them it was valid (the official ``appearance``)."""
        lookup, n, expand = self._lookup(rows)
        stored = torch.zeros((n, self.num_frames), dtype=torch.bool)
        valid = torch.zeros((n, self.num_frames), dtype=torch.bool)
        for rec in self.records:
            pos = lookup[rec.seq_ids]
            sel = pos >= 0
            stored[pos[sel], rec.frame - self.first_frame] = True
            valid[pos[sel], rec.frame - self.first_frame] = rec.valid[sel]
        if expand is not None:
            stored, valid = stored[expand], valid[expand]
        return stored, valid

    def frame_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, stored)``: (n, T, K+1) float32 per-frame tracker logits on the host (0 where a
        row stored nothing) and the (n, T) bool table of stored frames, rows in creation order."""
        lookup, n, _ = self._lookup(None)
        k1 = self.records[0].logits.shape[-1] if self.records else 1
        out = torch.zeros((n, self.num_frames, k1), dtype=torch.float32)
        stored = torch.zeros((n, self.num_frames), dtype=torch.bool)
        for rec in self.records:
            pos = lookup[rec.seq_ids]
            sel = pos >= 0
            out[pos[sel], rec.frame - self.first_frame] = rec.logits[sel.to(rec.logits.device)].float().cpu()
            stored[pos[sel], rec.frame - self.first_frame] = True
        return out, stored

    def embeds(self) -> torch.Tensor:
        """(n, T, C) last-layer tracker outputs per frame; frames a sequence did not store hold its
        final similarity-guided position (the official refiner padding)."""
        if self.positions is None or not self.records:
            raise ValueError("no sequences to read embeddings from")
        lookup, n, _ = self._lookup(None)
        dtype = torch.promote_types(self.positions.dtype, self.records[0].embeds.dtype)
        out = self.positions[:, None, :].to(dtype).repeat(1, self.num_frames, 1)
        for rec in self.records:
            pos = lookup[rec.seq_ids]
            sel = pos >= 0
            if bool(sel.any()):
                dev = rec.embeds.device
                out[pos[sel].to(dev), rec.frame - self.first_frame] = rec.embeds[sel.to(dev)].to(out.dtype)
        return out
