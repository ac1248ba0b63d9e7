"""VideoDistributedSampler: a partition of the videos over ranks, no duplicates, balanced."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from dvis_attn_pl.data.sampler import VideoDistributedSampler, split_videos


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 11, 12])
def test_count_balanced_partition(world, n):
    parts = [list(VideoDistributedSampler(n, world, r)) for r in range(world)]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n))  # union = all, each exactly once (no padding)
    assert len(flat) == len(set(flat))
    lens = [len(VideoDistributedSampler(n, world, r)) for r in range(world)]
    assert lens == [len(p) for p in parts]
    assert max(lens) - min(lens) <= 1
    assert all(p == sorted(p) for p in parts)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_frame_balanced_partition(world):
    lengths = [300, 20, 25, 30, 280, 40, 35, 22, 260, 31, 27]
    n = len(lengths)
    parts = [
        list(VideoDistributedSampler(n, world, r, balance="frames", lengths=lengths)) for r in range(world)
    ]
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(n))
    loads = [sum(lengths[i] for i in p) for p in parts]
    count_loads = [sum(lengths[i] for i in p) for p in split_videos(n, world)]
    assert max(loads) <= max(count_loads)
    if world == 3:  # the three long videos land on three different ranks
        assert sorted(next(r for r, p in enumerate(parts) if i in p) for i in (0, 4, 8)) == [0, 1, 2]
    # deterministic
    again = [
        list(VideoDistributedSampler(n, world, r, balance="frames", lengths=lengths)) for r in range(world)
    ]
    assert again == parts


def test_is_a_distributed_sampler_so_lightning_keeps_it():
    sampler = VideoDistributedSampler(5, 2, 1)
    assert isinstance(sampler, DistributedSampler)
    assert list(sampler) == [1, 3]
    sampler.set_epoch(3)
    assert list(sampler) == [1, 3]


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        VideoDistributedSampler(5, 2, 2)
    with pytest.raises(ValueError, match="num_replicas"):
        VideoDistributedSampler(5, 0, 0)
    with pytest.raises(ValueError, match="balance"):
        VideoDistributedSampler(5, 1, 0, balance="bytes")
    with pytest.raises(ValueError, match="one length per video"):
        VideoDistributedSampler(5, 1, 0, balance="frames", lengths=[1, 2])
