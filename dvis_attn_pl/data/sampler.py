"""Distributed evaluation over videos: every video on exactly one rank, no padding duplicates.

Lightning's default ``DistributedSampler`` pads the index list so every rank gets the same count;
for evaluation that scores some videos twice. :class:`VideoDistributedSampler` splits instead:

* ``balance="count"`` (default): rank r gets videos r, r + W, r + 2W, ... (W = world size), so
  per-rank counts differ by at most one and the split depends only on the number of videos.
* ``balance="frames"`` with ``lengths``: longest video first onto the rank with the fewest frames
  so far (ties: lower rank), which evens out the work when lengths vary a lot (e.g. 20 vs 300
  frames); per-rank counts may then differ by more than one. Deterministic for given lengths.

Each rank iterates its videos in ascending index order. The class subclasses
``torch.utils.data.DistributedSampler`` only so Lightning recognises it as already distributed and
never wraps or replaces it; the Trainer should still be built with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import DistributedSampler

__all__ = ["VideoDistributedSampler", "split_videos"]


def split_videos(
    dataset_len: int, num_replicas: int, balance: str = "count", lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """The video indices of every rank (a partition of ``range(dataset_len)``)."""
    if dataset_len < 0:
        raise ValueError(f"dataset_len must be >= 0, got {dataset_len}")
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if balance == "count":
        return [list(range(r, dataset_len, num_replicas)) for r in range(num_replicas)]
    if balance != "frames":
        raise ValueError(f"balance must be 'count' or 'frames', got {balance!r}")
    if lengths is None or len(lengths) != dataset_len:
        raise ValueError(f"balance='frames' needs one length per video ({dataset_len}), got {lengths!r:.80}")
    load = [0] * num_replicas
    parts: list[list[int]] = [[] for _ in range(num_replicas)]
    for index in sorted(range(dataset_len), key=lambda i: (-int(lengths[i]), i)):
        rank = min(range(num_replicas), key=lambda r: (load[r], len(parts[r]), r))
        parts[rank].append(index)
        load[rank] += int(lengths[index])
    return [sorted(p) for p in parts]


class VideoDistributedSampler(DistributedSampler):
    """The video indices of one rank; see the module docstring for the split rules."""

    def __init__(
        self,
        dataset_len: int,
        num_replicas: int = 1,
        rank: int = 0,
        *,
        balance: str = "count",
        lengths: Sequence[int] | None = None,
    ) -> None:
        # DistributedSampler.__init__ is deliberately not called: it needs a dataset and an
        # initialised process group, and pads. The attributes it would set are set here.
        if not 0 <= rank < max(num_replicas, 1):
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.indices = split_videos(dataset_len, num_replicas, balance, lengths)[rank]
        self.dataset = None
        self.dataset_len = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.balance = balance
        self.epoch = 0
        self.shuffle = False
        self.drop_last = False
        self.seed = 0
        self.num_samples = len(self.indices)
        self.total_size = dataset_len

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Kept for API compatibility; the split does not depend on the epoch."""
        self.epoch = epoch
