"""``load_config``: official DVIS-DAQ YAML files (``_BASE_`` chains) + ``KEY VALUE`` overrides.

Semantics follow detectron2's ``setup()`` (``get_cfg`` + ``add_*_config``, ``merge_from_file``,
``merge_from_list``, ``freeze``), re-implemented so every failure is one ``ConfigError`` line:

- ``_BASE_`` (a path or a list of paths, relative to the including file, ``~`` expanded) is read
  first and the including file's mapping is merged over it, recursively (nested mappings merge key
  by key, anything else replaces). Cycles and missing bases are errors.
- The merged mapping is then merged into the defaults: every key must exist; string values are
  decoded with ``ast.literal_eval`` (a string stays a string when that fails), then type-checked
  against the default the yacs way: same type, or either side ``None``, or list <-> tuple.
  Nothing else converts (an ``int`` where the default is a ``float`` is an error, as officially).
- Overrides (``["MODEL.WEIGHTS", "x.pth", ...]``) are applied last with the same decoding and check.
- Derived values are then resolved (``resolve_derived``): the ViT-Adapter sizes from
  ``MODEL.VIT_ADAPTER.NAME`` where not set, and ``MODEL.COMPAT``.
- The result is frozen, like detectron2's config after ``setup()``; pass ``freeze=False`` or use
  ``cfg.clone()`` + ``cfg.defrost()`` to edit it.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from fvcore.common.config import CfgNode

from ..utils.errors import ConfigError
from .defaults import (
    COMPAT_CHOICES,
    VIT_ADAPTER_BACKBONE,
    VIT_PRESETS,
    VIT_SIZE_KEYS,
    get_default_config,
)

__all__ = ["BASE_KEY", "ConfigError", "load_config", "merge_overrides", "resolve_derived"]

BASE_KEY = "_BASE_"
OVERRIDES_SOURCE = "overrides"
_COMPAT_KEY = "MODEL.COMPAT"
# Defined only by the fish-dvis fork's add_daq_config: an official setup rejects a config that sets
# it, so a config file that sets it was written for the fork.
_FORK_ONLY_KEY = "INPUT.SAMPLING_FRAME_STRIDE"
# Types a yacs config value may have (besides a nested node).
_PLAIN_TYPES = (tuple, list, str, int, float, bool, type(None))


# --------------------------------------------------------------------------------------------
# Reading YAML files with their _BASE_ chain


class _Layer:
    """A merged YAML mapping plus, for every dotted key in it, the file that supplied it."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.origin: dict[str, Path] = {}

    def merge(self, data: Mapping[str, Any], origin: Mapping[str, Path]) -> None:
        _merge_mapping(data, self.data, origin, self.origin, prefix="")


def _merge_mapping(
    src: Mapping[str, Any],
    dst: dict[str, Any],
    src_origin: Mapping[str, Path],
    dst_origin: dict[str, Path],
    prefix: str,
) -> None:
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key in dst:
            if not isinstance(dst[key], Mapping):
                raise ConfigError(
                    "is a mapping here but a plain value in a _BASE_ file; cannot merge them",
                    path=src_origin.get(dotted),
                    key=dotted,
                )
            _merge_mapping(value, dst[key], src_origin, dst_origin, prefix=f"{dotted}.")
        else:
            dst[key] = value
            for name in [n for n in dst_origin if n == dotted or n.startswith(f"{dotted}.")]:
                del dst_origin[name]
            dst_origin.update(
                {n: p for n, p in src_origin.items() if n == dotted or n.startswith(f"{dotted}.")}
            )


def _origins(data: Mapping[str, Any], path: Path, prefix: str = "") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out[dotted] = path
        if isinstance(value, Mapping):
            out.update(_origins(value, path, prefix=f"{dotted}."))
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        what = "is a directory, not a config file" if path.is_dir() else "no such file"
        raise ConfigError(what, path=path)
    try:
        with path.open("r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"YAML syntax error{where}: {exc.problem or exc}", path=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file ({exc})", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of keys, not a {type(data).__name__}", path=path)
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config keys must be strings, got {bad[0]!r}", path=path)
    return data


def _base_paths(value: Any, including: Path) -> list[Path]:
    items = value if isinstance(value, list) else [value]
    paths = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"must be a file path or a list of them, got {item!r}", path=including, key=BASE_KEY)
        if item.startswith(("http://", "https://")):
            raise ConfigError(f"remote base configs are not supported: {item}", path=including, key=BASE_KEY)
        base = Path(os.path.expanduser(item))
        paths.append(base if base.is_absolute() else including.parent / base)
    return paths


def _read_chain(path: Path, stack: tuple[Path, ...]) -> _Layer:
    """Read ``path`` and its ``_BASE_`` files (recursively), merged; ``stack`` detects cycles."""
    resolved = path.resolve()
    if resolved in stack:
        cycle = " -> ".join(str(p) for p in (*stack[stack.index(resolved):], resolved))
        raise ConfigError(f"_BASE_ cycle: {cycle}", path=path)
    data = _read_yaml(path)
    layer = _Layer()
    if BASE_KEY in data:
        for base in _base_paths(data.pop(BASE_KEY), path):
            if not base.is_file():
                raise ConfigError(f"_BASE_ file {base} not found", path=path)
            parent = _read_chain(base, (*stack, resolved))
            layer.merge(parent.data, parent.origin)
    layer.merge(data, _origins(data, path))
    return layer


# --------------------------------------------------------------------------------------------
# Merging into the defaults, yacs style


def _decode(value: Any) -> Any:
    """A raw value as yacs decodes it: strings through ``literal_eval``, with string fallback."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def _type_name(value: Any) -> str:
    return "mapping" if isinstance(value, Mapping) else type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(new: Any, old: Any, key: str, source: str | Path | None) -> Any:
    """``new`` checked against the default ``old`` (yacs rules), possibly list<->tuple converted."""
    if type(new) is type(old):
        return new
    if (new is None and type(old) in _PLAIN_TYPES) or (old is None and type(new) in _PLAIN_TYPES):
        return new
    if isinstance(new, list) and type(old) is tuple:
        return tuple(new)
    if isinstance(new, tuple) and type(old) is list:
        return list(new)
    raise ConfigError(
        f"expects {_type_name(old)}, got {_type_name(new)} {_short(new)} (current value {_short(old)})",
        path=source,
        key=key,
    )


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, CfgNode):
            keys.extend(_all_keys(value, f"{prefix}{name}."))
    return keys


def _unknown_key(root: CfgNode, dotted: str, source: str | Path | None) -> ConfigError:
    close = difflib.get_close_matches(dotted, _all_keys(root), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown config key{hint}", path=source, key=dotted)


def _check_plain(value: Any, key: str, source: str | Path | None) -> None:
    # Like yacs, only the value's own type is checked, not the items of a list.
    if not isinstance(value, _PLAIN_TYPES):
        raise ConfigError(f"value {_short(value)} of type {_type_name(value)} is not allowed", path=source, key=key)


def _merge_layer(root: CfgNode, layer: _Layer) -> None:
    def walk(src: Mapping[str, Any], node: CfgNode, prefix: str) -> None:
        for name, raw in src.items():
            dotted = f"{prefix}{name}"
            source = layer.origin.get(dotted)
            if not isinstance(name, str) or name not in node:
                raise _unknown_key(root, dotted, source)
            value = _decode(raw)
            current = node[name]
            if isinstance(current, CfgNode):
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"is a group of keys; got {_type_name(value)} {_short(value)}", path=source, key=dotted
                    )
                walk(value, current, f"{dotted}.")
                continue
            if isinstance(value, Mapping):
                raise ConfigError(
                    f"expects {_type_name(current)}, got a mapping (current value {_short(current)})",
                    path=source,
                    key=dotted,
                )
            _check_plain(value, dotted, source)
            node[name] = _coerce(value, current, dotted, source)

    walk(layer.data, root, "")


def merge_overrides(cfg: CfgNode, overrides: Sequence[Any], source: str = OVERRIDES_SOURCE) -> list[str]:
    """Apply ``[KEY, VALUE, KEY, VALUE, ...]`` to a mutable ``cfg``; returns the keys set."""
    items = list(overrides)
    if len(items) % 2:
        raise ConfigError(
            f"expected KEY VALUE pairs, got an odd number of tokens ({len(items)}); last: {_short(items[-1])}",
            path=source,
        )
    keys = []
    for key, raw in zip(items[0::2], items[1::2]):
        if not isinstance(key, str) or not key:
            raise ConfigError(f"a key must be a dotted name, got {_short(key)}", path=source)
        *parents, leaf = key.split(".")
        node: Any = cfg
        for name in parents:
            node = node.get(name) if isinstance(node, CfgNode) else None
        if not isinstance(node, CfgNode) or leaf not in node:
            raise _unknown_key(cfg, key, source)
        if isinstance(node[leaf], CfgNode):
            raise ConfigError("is a group of keys; override its leaves (e.g. KEY.SUBKEY VALUE)", path=source, key=key)
        value = _decode(raw)
        _check_plain(value, key, source)
        node[leaf] = _coerce(value, node[leaf], key, source)
        keys.append(key)
    return keys


# --------------------------------------------------------------------------------------------
# Derived values


def _resolve_vit_sizes(cfg: CfgNode, source: str | Path | None) -> None:
    vit = cfg.MODEL.VIT_ADAPTER
    preset = VIT_PRESETS.get(vit.NAME, {})
    for key in VIT_SIZE_KEYS:
        if vit[key] is None and key in preset:
            vit[key] = list(map(list, preset[key])) if key == "INTERACTION_INDEXES" else preset[key]
    if cfg.MODEL.BACKBONE.NAME != VIT_ADAPTER_BACKBONE:
        return
    if vit.NAME not in VIT_PRESETS and any(vit[k] is None for k in VIT_SIZE_KEYS):
        raise ConfigError(
            f"unknown ViT {vit.NAME!r}; use one of {', '.join(VIT_PRESETS)} or set every "
            f"MODEL.VIT_ADAPTER.{{{', '.join(VIT_SIZE_KEYS)}}}",
            path=source,
            key="MODEL.VIT_ADAPTER.NAME",
        )
    missing = [k for k in VIT_SIZE_KEYS if vit[k] is None]
    if missing:
        raise ConfigError(
            f"the official ViT-Adapter defines no adapter sizes for {vit.NAME!r}; set "
            + ", ".join(f"MODEL.VIT_ADAPTER.{k}" for k in missing),
            path=source,
            key="MODEL.VIT_ADAPTER.NAME",
        )
    for key in ("EMBED_DIM", "DEPTH", "NUM_HEADS", "DEFORM_NUM_HEADS", "CONV_INPLANE"):
        if not isinstance(vit[key], int) or isinstance(vit[key], bool) or vit[key] <= 0:
            raise ConfigError(f"must be a positive int, got {vit[key]!r}", path=source, key=f"MODEL.VIT_ADAPTER.{key}")
    for key in ("NUM_HEADS", "DEFORM_NUM_HEADS"):
        if vit.EMBED_DIM % vit[key]:
            raise ConfigError(
                f"{vit[key]} does not divide MODEL.VIT_ADAPTER.EMBED_DIM {vit.EMBED_DIM}",
                path=source,
                key=f"MODEL.VIT_ADAPTER.{key}",
            )
    pairs = vit.INTERACTION_INDEXES
    ok = isinstance(pairs, (list, tuple)) and len(pairs) > 0
    for pair in pairs if ok else ():
        ok = ok and isinstance(pair, (list, tuple)) and len(pair) == 2
        ok = ok and all(isinstance(i, int) for i in pair) and 0 <= pair[0] <= pair[1] < vit.DEPTH
    if not ok:
        raise ConfigError(
            f"must be a non-empty list of [first, last] block indexes within DEPTH {vit.DEPTH}, got {_short(pairs)}",
            path=source,
            key="MODEL.VIT_ADAPTER.INTERACTION_INDEXES",
        )


def resolve_derived(
    cfg: CfgNode,
    file_keys: Iterable[str] = (),
    explicit_keys: Iterable[str] = (),
    source: str | Path | None = None,
) -> CfgNode:
    """Fill the values that follow from others, in place, and validate them; returns ``cfg``.

    - ``MODEL.VIT_ADAPTER`` size keys left ``None`` take the ``VIT_PRESETS`` entry of
      ``MODEL.VIT_ADAPTER.NAME``. With the ViT-Adapter backbone, every size must end up set.
    - ``MODEL.COMPAT``: when neither the config files nor the overrides set it (``explicit_keys``)
      and the files set ``INPUT.SAMPLING_FRAME_STRIDE`` (``file_keys``), a key only the fish-dvis
      fork defines, it becomes ``"fish-dvis"``; otherwise it stays as set (default ``"official"``).
    """
    explicit = set(explicit_keys)
    if _COMPAT_KEY not in explicit and _FORK_ONLY_KEY in set(file_keys):
        cfg.MODEL.COMPAT = "fish-dvis"
    if cfg.MODEL.COMPAT not in COMPAT_CHOICES:
        raise ConfigError(
            f"must be one of {', '.join(COMPAT_CHOICES)}, got {cfg.MODEL.COMPAT!r}", path=source, key=_COMPAT_KEY
        )
    _resolve_vit_sizes(cfg, source)
    return cfg


FRAME_FORMATS = ("RGB", "BGR")  # = data.transforms.SUPPORTED_FORMATS (this module does not import torch)
# (key, smallest value): sizes and counts the model cannot be built or run with below that
_MINIMUM = (
    ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1),
    ("MODEL.SEM_SEG_HEAD.CONVS_DIM", 1),
    ("MODEL.SEM_SEG_HEAD.MASK_DIM", 1),
    ("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 1),
    ("MODEL.MASK_FORMER.HIDDEN_DIM", 1),
    ("MODEL.MASK_FORMER.NHEADS", 1),
    ("MODEL.MASK_FORMER.DIM_FEEDFORWARD", 1),
    ("MODEL.MASK_FORMER.DEC_LAYERS", 1),
    ("MODEL.MASK_FORMER.TEST.WINDOW_SIZE", 1),
    ("MODEL.MASK_FORMER.TEST.MAX_NUM", 1),
    ("MODEL.TRACKER.DECODER_LAYERS", 0),
    ("MODEL.REFINER.DECODER_LAYERS", 0),
    ("MODEL.VIDEO_HEAD.NUM_NEW_INS", 0),
    ("MODEL.VIDEO_HEAD.NUM_SLOTS", 0),
    ("MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM", 1),
    ("INPUT.MIN_SIZE_TEST", 0),
    ("INPUT.MAX_SIZE_TEST", 1),
)
# (key, key whose value it must divide): attention splits a width into equal heads
_DIVIDES = (
    ("MODEL.MASK_FORMER.NHEADS", "MODEL.MASK_FORMER.HIDDEN_DIM"),
    ("MODEL.MASK_FORMER.NHEADS", "MODEL.SEM_SEG_HEAD.CONVS_DIM"),
)


def _get(cfg: CfgNode, dotted: str) -> Any:
    node = cfg
    for name in dotted.split("."):
        node = node[name]
    return node


def check_values(cfg: CfgNode, source: str | Path | None = None) -> None:
    """Refuse values that cannot work (a negative count, a head count that does not divide the width,
    a pixel mean that is not one value per RGB channel) before any model is built or file written.

    The command line calls it on the model config of a run; :func:`load_config` itself does not, so
    a config can still be loaded and inspected whatever its values."""
    for key, low in _MINIMUM:
        value = _get(cfg, key)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise ConfigError(f"must be >= {low}, got {value}", path=source, key=key)
    for key, width_key in _DIVIDES:
        heads, width = _get(cfg, key), _get(cfg, width_key)
        if heads >= 1 and width % heads:
            raise ConfigError(f"{heads} heads do not divide {width_key} {width}", path=source, key=key)
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"):
        value = list(_get(cfg, key))
        if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
            raise ConfigError(f"must be 3 numbers (one per RGB channel), got {_short(value)}", path=source, key=key)
    if cfg.INPUT.FORMAT not in FRAME_FORMATS:
        raise ConfigError(f"must be one of {', '.join(FRAME_FORMATS)}, got {cfg.INPUT.FORMAT!r}", path=source, key="INPUT.FORMAT")
    if min(cfg.MODEL.PIXEL_STD) <= 0:
        raise ConfigError(f"must be > 0, got {list(cfg.MODEL.PIXEL_STD)}", path=source, key="MODEL.PIXEL_STD")


# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], overrides: Sequence[Any] = (), *, freeze: bool = True) -> CfgNode:
    """Load an official (or our) DVIS-DAQ YAML config with its ``_BASE_`` chain, then ``overrides``.

    ``overrides`` are detectron2-style trailing pairs, e.g. ``["MODEL.WEIGHTS", "x.pth",
    "INPUT.MIN_SIZE_TEST", "360"]``. Returns a (by default frozen) fvcore ``CfgNode`` holding every
    default key. Raises ``ConfigError`` (a ``ValueError``) with a one-line message naming the file
    and key for an unknown key, a wrong type, bad YAML, a missing file or base, or a ``_BASE_`` cycle.
    """
    path = Path(path)
    layer = _read_chain(path, stack=())
    if "VERSION" in layer.data and _decode(layer.data["VERSION"]) != 2:
        raise ConfigError(
            f"config VERSION {layer.data['VERSION']!r} is not supported (only 2, detectron2's current one)",
            path=layer.origin.get("VERSION", path),
            key="VERSION",
        )
    cfg = get_default_config()
    _merge_layer(cfg, layer)
    override_keys = merge_overrides(cfg, overrides, source=f"{path} {OVERRIDES_SOURCE}")
    file_keys = [k for k in layer.origin]
    source = path if not override_keys else f"{path} (+ overrides)"
    resolve_derived(cfg, file_keys=file_keys, explicit_keys=[*file_keys, *override_keys], source=source)
    if freeze:
        cfg.freeze()
    return cfg
