"""Host reads in one forward: they grow with the windows (and at most one small read per tracked
frame, the live-sequence count that sizes the next frame), never with frames x instances.
Counted with :class:`~dvis_attn_pl.model.host_reads.HostReads` (every host read on the CPU: an
upper bound of the synchronisations on a GPU)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from dvis_attn_pl import build_model, load_config
from dvis_attn_pl.config import config_path
from dvis_attn_pl.model.host_reads import HostReads
from dvis_attn_pl.model.tracker import FrameUpdate, SequenceMemory


def _model(arch: str, window: int):
    """The tiny model with random weights; every anchor row valid, so instances pile up."""
    cfg = load_config(
        config_path("tiny_cpu"),
        overrides=[
            "MODEL.META_ARCHITECTURE",
            arch,
            "MODEL.VIDEO_HEAD.INFERENCE_SELECT_THRESHOLD",
            "0.0",
            "MODEL.VIDEO_HEAD.AUX_INFERENCE_SELECT_THRESHOLD",
            "0.0",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model.window_size = window
    return model


def _reads(model, frames: int) -> tuple[int, int]:
    """(host reads in one forward, tracker sequences it created) for a random video."""
    gen = torch.Generator().manual_seed(frames)
    video = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=gen) for _ in range(frames)]
    with torch.no_grad(), HostReads() as reads:
        model([{"image": video, "height": 64, "width": 96, "video_id": 1}])
    return reads.total, model.tracker.memory.num_sequences


@pytest.mark.parametrize("arch", ["DVIS_DAQ_online", "DVIS_DAQ_offline"])
def test_reads_grow_with_frames_by_at_most_one_not_with_instances(arch):
    model = _model(arch, window=12)
    short, short_seqs = _reads(model, 4)
    long, long_seqs = _reads(model, 12)
    assert long_seqs > short_seqs + 8  # many more (frame, instance) records in the long video
    assert long - short <= 12 - 4  # at most the live-count read per extra frame


@pytest.mark.parametrize("arch", ["DVIS_DAQ_online", "DVIS_DAQ_offline"])
def test_reads_per_window_are_bounded(arch):
    one, _ = _reads(_model(arch, window=12), 12)
    three, _ = _reads(_model(arch, window=4), 12)
    assert three - one <= 2 * 2  # at most two more reads per extra window


def _frame(memory: SequenceMemory, frame: int, valid: list[bool]) -> None:
    n = len(valid)
    memory.update(
        FrameUpdate(
            frame=frame,
            outputs=torch.randn(n, 4),
            logits=torch.randn(n, 3),
            masks=torch.randn(n, 5, 5),
            positions=torch.randn(n, 4),
            valid=torch.tensor(valid),
        )
    )


def test_memory_reads_once_per_frame_and_once_per_collection():
    memory = SequenceMemory(hidden_dim=4, store_device="cpu")
    with HostReads() as reads:
        _frame(memory, 0, [True] * 6)
        for frame in range(1, 9):
            _frame(memory, frame, [frame % 2 == 0] * memory.num_live + [True] * 2)
        memory.end_window()
    assert memory.num_sequences > 20
    assert reads.counts == Counter(tolist=9)  # one per frame, none for the masks
    with HostReads() as reads:
        collected = memory.collect(0, 9, noise_frame_num=1)
    assert reads.total == 1 and len(collected) == memory.num_sequences
