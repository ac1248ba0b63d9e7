"""Reading model weights safely and loading them strictly.

Formats: torch ``.pth``/``.pt`` files (a state dict, or a dict with the state dict under
``"model"`` as detectron2 saves it), read with ``torch.load(weights_only=True)``; detectron2
``.pkl`` weight files (a pickled dict of numpy arrays, maybe under ``"model"``), read by an
unpickler that accepts numpy arrays and nothing else; ``.safetensors``. ``trust=True`` allows
torch's full unpickler for ``.pth``/``.pt``/``.pkl`` files that hold other objects (only for files
you trust: unpickling can run arbitrary code).

Every failure is a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils.errors import UserError

MAX_NAMES = 5  # keys listed per category in a mismatch message
_METADATA_KEYS = ("__author__", "matching_heuristics")


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be read or does not match the model."""


# --------------------------------------------------------------------------------------------
# .pkl: numpy-only unpickling


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The (module, name) pairs a pickled dict of numpy arrays needs, resolved once."""
    names = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    }
    table: dict[tuple[str, str], object] = {}
    for module, name in names:
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # numpy < 2 spells these numpy.core.*
            obj = getattr(importlib.import_module(module.replace("numpy._core", "numpy.core")), name)
        table[(module, name)] = obj
        table[(module.replace("numpy._core", "numpy.core"), name)] = obj
    table[("collections", "OrderedDict")] = OrderedDict
    table[("_codecs", "encode")] = _latin1_encode  # protocol-2 pickles store bytes this way
    return table


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected byte encoding {encoding!r}")
    return text.encode("latin1")


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, scalars, strings and numpy arrays/dtypes."""

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if _NumpyUnpickler._allowed is None:
            _NumpyUnpickler._allowed = _numpy_globals()
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy >= 1.25 dtype classes
            cls = getattr(importlib.import_module("numpy.dtypes"), name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed (only numpy arrays are read from .pkl)")


def _read_numpy_pickle(path: Path) -> object:
    with open(path, "rb") as f:
        return _NumpyUnpickler(f, encoding="latin1").load()


# --------------------------------------------------------------------------------------------
# reading


def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {problem}")


def _short(exc: BaseException) -> str:
    """The first line of an exception message, trimmed."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _torch_load(path: Path, trust: bool) -> object:
    mmap = zipfile.is_zipfile(path)
    if not mmap:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise _fail(path, "is truncated or corrupt (a zip archive without its central directory)")
    try:
        if path.name.lower().endswith(".safetensors"):  # torch.load would pick its reader by the name
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=not trust)
        return torch.load(path, map_location="cpu", weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as exc:
        inner = exc.__context__ if isinstance(exc.__context__, pickle.UnpicklingError) else exc
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))  # weights_only met a class or function
        if not trust and refused:
            raise _fail(
                path,
                f"holds pickled objects other than tensors ({refused.group(1)}), which are refused for safety "
                "(pass --trust-checkpoint / trust=True only if you trust the file)",
            ) from None
        raise _fail(path, f"is truncated or corrupt (cannot be unpickled: {_short(inner)})") from None
    except Exception as exc:  # torch raises many kinds on damaged files
        raise _fail(path, f"is truncated or corrupt ({type(exc).__name__}: {_short(exc)})") from None


def _read_trusted_pickle(path: Path) -> object:
    """Full unpickling (arbitrary objects); only reached with ``trust=True``."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # the user vouched for this file
    except Exception as exc:  # any failure of an arbitrary pickle
        raise _fail(path, f"cannot be unpickled ({type(exc).__name__}: {_short(exc)})") from None


def _read_pkl(path: Path, trust: bool) -> object:
    if zipfile.is_zipfile(path):  # a torch file named .pkl
        return _torch_load(path, trust)
    try:
        return _read_numpy_pickle(path)
    except pickle.UnpicklingError as exc:
        if "is not allowed" in str(exc):
            if trust:
                return _read_trusted_pickle(path)
            raise _fail(
                path,
                f"holds pickled objects other than numpy arrays ({_short(exc)}); they are refused for safety "
                "(pass --trust-checkpoint / trust=True only if you trust the file)",
            ) from None
        raise _fail(path, f"is truncated or corrupt ({_short(exc)})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise _fail(path, f"is truncated or corrupt ({type(exc).__name__}: {_short(exc)})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(path, f"is truncated or corrupt ({_short(exc)})") from None


def _to_tensor(path: Path, key: str, value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype == object:
            raise _fail(path, f"entry {key!r} is an object array, not numbers")
        array = np.ascontiguousarray(array)
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    raise _fail(path, f"entry {key!r} is a {type(value).__name__}, not a tensor")


def _unwrap(path: Path, obj: object) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, top-level metadata) from a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise _fail(path, f"holds a {type(obj).__name__}, not a dict of tensors")
    if isinstance(obj.get("model"), dict):
        meta = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    else:  # weights at the top level, maybe next to detectron2's metadata entries
        meta = {
            k: obj[k]
            for k in _METADATA_KEYS
            if k in obj and not isinstance(obj[k], torch.Tensor | np.ndarray)
        }
        obj = {k: v for k, v in obj.items() if k not in meta}
    state = {str(k): _to_tensor(path, str(k), v) for k, v in obj.items()}
    return state, meta


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, top-level metadata) stored in ``path``; one-line :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise _fail(path, "is empty (0 bytes)")
    kind = _format_by_content(path)
    if kind == "safetensors" or (kind is None and path.suffix.lower() == ".safetensors"):
        return _read_safetensors(path), {}
    if kind == "zip":
        return _unwrap(path, _torch_load(path, trust))
    obj = _read_pkl(path, trust) if path.suffix.lower() == ".pkl" else _torch_load(path, trust)
    return _unwrap(path, obj)


def _format_by_content(path: Path) -> str | None:
    """``"zip"`` (torch's format), ``"safetensors"`` (an 8-byte little-endian header length, then a
    JSON object of that length inside the file) or None (a pickle, or unknown): the file name's
    extension is not trusted."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= path.stat().st_size - 8:
            return "safetensors"
    return None


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict stored in ``path`` (.pth/.pt, detectron2 .pkl or .safetensors) as CPU tensors."""
    return read_checkpoint(path, trust)[0]


# --------------------------------------------------------------------------------------------
# strict loading


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_NAMES])
    return shown + (f" ... and {len(keys) - MAX_NAMES} more" if len(keys) > MAX_NAMES else "")


def mismatch_message(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """A short description of how ``given`` differs from ``expected`` (None when they match)."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    wrong = sorted(k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or wrong):
        return None
    parts = [f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} with a wrong shape"]
    if missing:
        parts.append(f"missing: {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected: {_names(unexpected)}")
    if wrong:
        shapes = [f"{k} {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong]
        parts.append(f"wrong shape: {_names(shapes)}")
    return "; ".join(parts)


def _class_count_hint(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """A note when the classifier sizes differ: the checkpoint was trained for another class count."""
    for key, target in expected.items():
        value = given.get(key)
        if key.endswith("class_embed.bias") and value is not None and value.shape != target.shape:
            return (
                f" (the checkpoint has {value.shape[0] - 1} classes, the model config "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {target.shape[0] - 1})"
            )
    return ""


def load_checkpoint(model: nn.Module, path: str | Path, trust: bool = False) -> None:
    """Load ``path`` into ``model`` strictly: every key present, no extra key, every shape equal.

    Floating-point entries are cast to the dtype of the model's tensor. Non-persistent buffers
    (``pixel_mean``/``pixel_std``) are not expected in the file.
    """
    load_state_strict(model, *read_checkpoint(path, trust), path)


def _check_values(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse an entry that is not floating point where the model's tensor is (integer weights would
    be cast without a word), and floating-point entries holding NaN or infinite values."""
    for key, target in expected.items():
        value = state[key]
        if target.is_floating_point() and not (value.is_floating_point() or value.numel() == 0):
            raise CheckpointError(
                f"checkpoint {path}: entry {key!r} is {value.dtype} but the model's tensor is {target.dtype} "
                "(integer weights: a quantised or damaged file)"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"checkpoint {path}: entry {key!r} holds NaN or infinite values")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], meta: dict, path: str | Path) -> None:
    """Load ``state`` (read from ``path`` by :func:`read_checkpoint`) into ``model`` strictly."""
    expected = model.state_dict()
    problem = mismatch_message(expected, state)
    if problem:
        hint = _class_count_hint(expected, state)
        if meta.get("matching_heuristics"):
            hint += " (the file asks for detectron2's name-matching heuristics, which are not supported)"
        raise CheckpointError(f"checkpoint {path} does not match the model: {problem}{hint}")
    _check_values(state, expected, path)
    for key, target in expected.items():
        value = state[key]
        if value.is_floating_point() and target.is_floating_point() and value.dtype != target.dtype:
            state[key] = value.to(target.dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a value that cannot be copied into its tensor
        raise CheckpointError(f"checkpoint {path}: {_short(exc)}") from None


__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_state_strict",
    "mismatch_message",
    "read_checkpoint",
    "read_state_dict",
]
