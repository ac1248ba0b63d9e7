"""Video frames, decoded lazily.

Memory choice: a dataset item's ``image`` is a :class:`LazyFrames`, a read-only sequence that
holds only file paths (or a reference to in-memory arrays) and the test-time resize. Indexing
decodes one frame and resizes it to a (3, h, w) uint8 tensor; nothing is cached, so a 300-frame
video costs nothing until the model asks for a window, and then only that window's uint8 frames
(e.g. 5 x 3 x 480 x 854 bytes = 6 MB) before the model normalises them. Slicing returns another
lazy view. ``torch.stack(list(frames[s:e]))`` gives one window. The price: a frame read twice is
decoded twice, and decoding runs in the process that indexes (the training-step process, not a
DataLoader worker). :meth:`LazyFrames.materialize` (or ``eager=True`` in the dataset) decodes
everything at once (in the worker) when that trade is better: T x 3 x h x w bytes per video.

Errors are :class:`FrameError` (a ``ValueError``) with one line naming the file. Path safety,
stat checks and header sizes live in :mod:`.frame_files` (no torch), re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .frame_files import FrameError, check_frame_file, check_frame_size, read_frame_size, resolve_frame_path

__all__ = [
    "FrameError",
    "resolve_frame_path",
    "read_frame",
    "read_frame_size",
    "FrameSource",
    "FileFrames",
    "ArrayFrames",
    "LazyFrames",
]


def read_frame(path: str | Path) -> np.ndarray:
    """Decode an image file to an (h, w, 3) uint8 RGB array (EXIF orientation applied)."""
    path = Path(path)
    check_frame_file(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in _WIDE_GRAY_MODES:
                return _wide_gray_to_rgb(np.asarray(img))
            return np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise FrameError(f"{path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"{path}: cannot decode frame ({type(exc).__name__}: {exc})") from None


_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey PNG/TIFF (Pillow may say "I")


def _wide_gray_to_rgb(values: np.ndarray) -> np.ndarray:
    """A 16-bit grey image scaled (not clipped, as Pillow's ``convert`` does) to 8-bit RGB:
    0..65535 -> 0..255, rounded."""
    scaled = (np.clip(values.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
    return np.repeat(scaled.astype(np.uint8)[:, :, None], 3, axis=2)


class FrameSource(Protocol):
    """Where one video's frames come from."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray:
        """Frame ``index`` as an (h, w, 3) uint8 RGB array."""
        ...

    def name(self, index: int) -> str:
        """How error messages name frame ``index``."""
        ...

    def size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of frame ``index`` without decoding its pixels."""
        ...


class FileFrames:
    """Frames stored as image files."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        return read_frame(self.paths[index])

    def name(self, index: int) -> str:
        return str(self.paths[index])

    def size(self, index: int) -> tuple[int, int]:
        return read_frame_size(self.paths[index])


class ArrayFrames:
    """Frames already in memory: a (T, h, w, 3) uint8 RGB array or a list of (h, w, 3) arrays."""

    def __init__(
        self, frames: np.ndarray | torch.Tensor | Sequence[np.ndarray], label: str = "<memory>"
    ) -> None:
        if isinstance(frames, torch.Tensor):
            frames = frames.numpy()
        self.frames = list(frames)
        self.label = label
        for i, f in enumerate(self.frames):
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise FrameError(
                    f"{self.name(i)}: expected an (h, w, 3) uint8 RGB array, got {f.dtype} {f.shape}"
                )

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> np.ndarray:
        return self.frames[index]

    def name(self, index: int) -> str:
        return f"{self.label}[{index}]"

    def size(self, index: int) -> tuple[int, int]:
        return tuple(self.frames[index].shape[:2])


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class LazyFrames(Sequence[torch.Tensor]):
    """A video's frames as a read-only sequence of (3, h, w) uint8 tensors, decoded on access.

    ``expected_hw`` (the json's height, width) is checked on every decode, so frames of different
    sizes in one video, or a frame that disagrees with the json, raise :class:`FrameError`.
    ``decode_count`` counts decodes across this object and every slice taken from it.
    """

    def __init__(
        self,
        source: FrameSource,
        transform: Callable[[np.ndarray], torch.Tensor] | None = None,
        expected_hw: tuple[int, int] | None = None,
        indices: range | None = None,
        _counter: _Counter | None = None,
    ) -> None:
        self.source = source
        self.transform = transform
        self.expected_hw = None if expected_hw is None else (int(expected_hw[0]), int(expected_hw[1]))
        self.indices = range(len(source)) if indices is None else indices
        self._counter = _counter or _Counter()

    @property
    def decode_count(self) -> int:
        return self._counter.value

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of every tensor this yields, known without decoding (``None`` if it cannot be)."""
        if self.expected_hw is None:
            return None
        if self.transform is None:
            return self.expected_hw
        output_shape = getattr(self.transform, "output_shape", None)
        return None if output_shape is None else tuple(output_shape(*self.expected_hw))

    def __repr__(self) -> str:
        return f"LazyFrames(len={len(self)}, expected_hw={self.expected_hw})"

    def __getitem__(self, key):  # int -> Tensor, slice -> LazyFrames
        if isinstance(key, slice):
            return LazyFrames(self.source, self.transform, self.expected_hw, self.indices[key], self._counter)
        return self._decode(self.indices[int(key)])

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in self.indices:
            yield self._decode(i)

    def _decode(self, index: int) -> torch.Tensor:
        image = self.source.load(index)
        self._counter.value += 1
        self._check_size(index, tuple(image.shape[:2]))
        if self.transform is not None:
            return self.transform(image)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def _check_size(self, index: int, hw: tuple[int, int]) -> None:
        if self.expected_hw is not None:
            check_frame_size(self.source.name(index), hw, self.expected_hw)

    def check_headers(self) -> None:
        """Check every frame exists, is non-empty and has the expected size, reading headers only."""
        for i in self.indices:
            self._check_size(i, tuple(self.source.size(i)))

    def materialize(self) -> list[torch.Tensor]:
        """Decode every frame now: a list of (3, h, w) uint8 tensors."""
        return list(self)

    def stack(self) -> torch.Tensor:
        """Decode every frame now: a (T, 3, h, w) uint8 tensor."""
        return torch.stack(self.materialize()) if len(self) else torch.empty(0, 3, 0, 0, dtype=torch.uint8)
