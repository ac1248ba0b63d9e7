"""The DAQ tracker: ``VideoInstanceCutter``, its slot branch and its per-sequence memory."""

from .sequence import CollectedSequences, FrameRecord, FrameUpdate, SequenceMemory
from .slot_attention import SlotAttention, SlotCrossAttentionLayer
from .track_module import TrackerSettings, TrackerWindow, VideoInstanceCutter, foreground_score

__all__ = [
    "CollectedSequences",
    "FrameRecord",
    "FrameUpdate",
    "SequenceMemory",
    "SlotAttention",
    "SlotCrossAttentionLayer",
    "TrackerSettings",
    "TrackerWindow",
    "VideoInstanceCutter",
    "foreground_score",
]
