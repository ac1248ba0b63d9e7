"""Data: YTVIS json reader, lazy frames, the official test-time resize, datasets, sampler, synthetic set.

Modules: ``ytvis_json`` (json -> typed records, validation), ``rle`` (segmentation entries ->
compressed RLE), ``frames`` (lazy decoding), ``frame_files`` (path safety, stat and header checks;
no torch), ``transforms`` (test resize, ``normalize_and_pad``), ``dataset`` (``YTVISVideoDataset``),
``sampler`` (``VideoDistributedSampler``), ``datamodule`` (``YTVISDataModule``), ``synthetic`` (the
embedded fish-video set). Names below are imported lazily so reading a json does not import Lightning.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "load_ytvis_json": "ytvis_json",
    "parse_ytvis": "ytvis_json",
    "YTVISData": "ytvis_json",
    "YTVISFormatError": "ytvis_json",
    "FrameError": "frames",
    "LazyFrames": "frames",
    "ShortestEdgeResize": "transforms",
    "normalize_and_pad": "transforms",
    "YTVISVideoDataset": "dataset",
    "VideoDistributedSampler": "sampler",
    "YTVISDataModule": "datamodule",
    "collate_videos": "datamodule",
    "ensure_synthetic_dataset": "synthetic",
    "write_synthetic_dataset": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
