"""Training of DVIS-DAQ in the official stages (segmenter, tracker, refiner): ``python -m dvis_attn_pl fit``."""

STAGES = ("segmenter", "tracker", "refiner")

__all__ = ["STAGES"]
