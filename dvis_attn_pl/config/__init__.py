"""Configuration: the official DVIS-DAQ keys and defaults, YAML loading, our bundled configs.

``load_config(path, overrides=())`` reads an official YAML file unchanged (``_BASE_`` chains
included) and returns a frozen fvcore ``CfgNode``; ``get_default_config()`` gives the defaults;
``config_path(name)`` finds one of the configs shipped in the repository's ``configs/`` folder.
"""

from __future__ import annotations

from pathlib import Path

from ..utils.errors import ConfigError
from .defaults import COMPAT_CHOICES, VIT_PRESETS, get_default_config
from .loader import check_values, load_config, merge_overrides, resolve_derived

__all__ = [
    "check_values",
    "COMPAT_CHOICES",
    "CONFIGS_DIR",
    "VIT_PRESETS",
    "ConfigError",
    "available_configs",
    "config_path",
    "get_default_config",
    "load_config",
    "merge_overrides",
    "resolve_derived",
]

#: The repository's ``configs/`` folder (our own YAML configs).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def available_configs() -> list[str]:
    """Names (file stems) of the bundled model configs in ``CONFIGS_DIR``, sorted.

    Files whose name starts with ``_`` are shared bases, not listed (``config_path`` still finds them).
    """
    if not CONFIGS_DIR.is_dir():
        return []
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def config_path(name: str) -> Path:
    """The path of bundled config ``name`` (``"tiny_cpu"`` or ``"tiny_cpu.yaml"``).

    Raises ``ConfigError`` listing the available names when there is no such config.
    """
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = CONFIGS_DIR / f"{stem}.yaml"
    if "/" in stem or "\\" in stem or not stem or not path.is_file():
        names = ", ".join(available_configs()) or "none found"
        raise ConfigError(f"no bundled config named {name!r} in {CONFIGS_DIR}; available: {names}")
    return path
