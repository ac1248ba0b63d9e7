"""``--model-source detectron2``: run a user's own DVIS-DAQ code, built through detectron2's registry.

Nothing here imports detectron2 or the user's code at module import time: :func:`build_detectron2_model`
does it on demand. The user's code folders come from ``code_paths`` and the environment variable
``DVIS_ATTN_PL_D2_CODE`` (``os.pathsep``-separated); the packages imported so that their registrations
and ``add_*_config`` functions exist come from ``DVIS_ATTN_PL_D2_MODULES`` (comma- or
``os.pathsep``-separated; default: the four packages of the official DVIS-DAQ code).

Such a model has no capture sites of ours. Its ``nn.MultiheadAttention`` layers return head-averaged
weights as their second output, so :func:`attach_mha_hooks` reads them with forward hooks under the
official module names and hands them to a sink with the same signature as our capture sites use.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..utils.errors import UserError
from .capture import attention_kind

CODE_ENV = "DVIS_ATTN_PL_D2_CODE"
MODULES_ENV = "DVIS_ATTN_PL_D2_MODULES"
DEFAULT_MODULES: tuple[str, ...] = ("mask2former", "mask2former_video", "dvis_Plus", "dvis_daq")
# The official training script applies these in this order after get_cfg().
CONFIG_FUNCTIONS: tuple[str, ...] = (
    "add_maskformer2_config",
    "add_maskformer2_video_config",
    "add_minvis_config",
    "add_dvis_config",
    "add_ctvis_config",
    "add_daq_config",
)
INSTALL_HINT = (
    "install detectron2 into this environment (build it from a checkout of facebookresearch/detectron2: "
    "pip install --no-build-isolation -e <checkout>)"
)


# ----------------------------------------------------------------------------- imports


def _split_env(value: str | None, seps: Sequence[str]) -> list[str]:
    """Non-empty, stripped items of ``value`` split on any of ``seps``."""
    if not value:
        return []
    for sep in seps[1:]:
        value = value.replace(sep, seps[0])
    return [item.strip() for item in value.split(seps[0]) if item.strip()]


def code_paths_from_env() -> list[str]:
    """Folders named by ``DVIS_ATTN_PL_D2_CODE`` (``os.pathsep``-separated)."""
    return _split_env(os.environ.get(CODE_ENV), [os.pathsep])


def module_names_from_env() -> list[str]:
    """Packages named by ``DVIS_ATTN_PL_D2_MODULES``, or :data:`DEFAULT_MODULES`."""
    names = _split_env(os.environ.get(MODULES_ENV), [",", os.pathsep])
    return names or list(DEFAULT_MODULES)


def require_detectron2() -> ModuleType:
    """Import detectron2 or raise a one-line :class:`UserError` saying how to install it."""
    try:
        import detectron2
        import detectron2.config  # noqa: F401
        import detectron2.modeling  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"--model-source detectron2: detectron2 is not importable ({exc}); {INSTALL_HINT}"
        ) from None
    return detectron2


def add_code_paths(paths: Iterable[str | Path]) -> list[str]:
    """Put each folder at the front of ``sys.path`` (once); returns the folders added or already there."""
    added = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"{raw}: DVIS-DAQ code folder does not exist (from --model-source detectron2 / {CODE_ENV})")
        text = str(path)
        if text not in sys.path:
            sys.path.insert(0, text)
        added.append(text)
    return added


def import_user_modules(names: Iterable[str]) -> list[ModuleType]:
    """Import the user's packages so their detectron2 registrations run; one-line error on failure."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # any failure inside the user's package is a setup problem
            where = f"; searched {CODE_ENV}={os.environ.get(CODE_ENV, '')!r}" if isinstance(exc, ImportError) else ""
            raise UserError(
                f"--model-source detectron2: importing {name!r} failed ({type(exc).__name__}: {exc}){where}; "
                f"set {CODE_ENV} to the folder holding it, or {MODULES_ENV} to the packages to import"
            ) from None
    return modules


def _find_function(modules: Sequence[ModuleType], name: str) -> Callable | None:
    """``name`` as a top-level attribute of a module or of its ``config`` submodule."""
    for module in modules:
        fn = getattr(module, name, None)
        if fn is None:
            sub = sys.modules.get(f"{module.__name__}.config")
            fn = getattr(sub, name, None) if sub is not None else None
        if callable(fn):
            return fn
    return None


# ----------------------------------------------------------------------------- config and model


def load_detectron2_config(
    config_path: str | Path, overrides: Sequence[str] = (), code_paths: Sequence[str | Path] = ()
):
    """detectron2 ``get_cfg()`` + the user's ``add_*_config`` functions + file + overrides, frozen."""
    require_detectron2()
    from detectron2.config import get_cfg

    add_code_paths([*code_paths, *code_paths_from_env()])
    modules = import_user_modules(module_names_from_env())
    cfg = get_cfg()
    try:
        from detectron2.projects.deeplab import add_deeplab_config
    except ImportError:
        add_deeplab_config = None
    if add_deeplab_config is not None:
        add_deeplab_config(cfg)
    applied = [fn for fn in (_find_function(modules, n) for n in CONFIG_FUNCTIONS) if fn is not None]
    for fn in applied:
        fn(cfg)
    path = Path(config_path)
    if not path.is_file():
        raise UserError(f"{config_path}: model config file does not exist")
    try:
        cfg.merge_from_file(str(path))
    except Exception as exc:
        raise UserError(f"{config_path}: detectron2 cannot merge this config ({type(exc).__name__}: {exc})") from None
    try:
        cfg.merge_from_list(list(overrides))
    except Exception as exc:
        raise UserError(f"overrides: detectron2 rejected them ({type(exc).__name__}: {exc})") from None
    cfg.freeze()
    return cfg


class Detectron2VideoModel(nn.Module):
    """A detectron2-built video model behind our ``model([video])`` interface.

    ``official`` is the user's model (official module names below it); calls run in eval mode under
    ``torch.no_grad``. Its trace is None: the harness then writes the official outputs and records
    only.
    """

    def __init__(self, official: nn.Module, cfg) -> None:
        super().__init__()
        self.official = official
        self.cfg = cfg

    def forward(self, batched_inputs: list[dict]) -> dict:
        with torch.no_grad():
            return self.official(batched_inputs)

    def run_with_trace(self, batched_inputs: list[dict]) -> tuple[dict, None]:
        """The official outputs; no trace (the user's code keeps no per-prediction temporal record)."""
        return self(batched_inputs), None


def build_detectron2_model(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    ckpt: str | Path | None = None,
    code_paths: Sequence[str | Path] = (),
    *,
    trust: bool = False,
    cfg=None,
) -> Detectron2VideoModel:
    """Build the user's model through detectron2's meta-architecture registry, in eval mode on CPU.

    ``ckpt`` is loaded strictly with our reader (weights only unless ``trust``); without it the
    weights are the constructors' random ones under ``torch.manual_seed(cfg.SEED or 0)``. ``cfg``
    skips :func:`load_detectron2_config` when the caller already has it.
    """
    if cfg is None:
        if config_path is None:
            raise ValueError("build_detectron2_model: give config_path or cfg")
        cfg = load_detectron2_config(config_path, overrides, code_paths)
    else:
        require_detectron2()
    from detectron2.modeling import build_model

    from .checkpoint import load_checkpoint

    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    torch.manual_seed(int(cfg.SEED) if int(cfg.SEED) >= 0 else 0)
    try:
        official = build_model(cfg)
    except KeyError as exc:  # unregistered meta-architecture / head name
        raise UserError(
            f"{config_path or 'model config'}: detectron2 could not build the model ({exc}); "
            "is the package that registers it "
            f"in {MODULES_ENV}?"
        ) from None
    if ckpt:
        load_checkpoint(official, ckpt, trust=trust)
    official.to("cpu").eval()
    return Detectron2VideoModel(official, cfg).eval()


# ----------------------------------------------------------------------------- attention hooks


@dataclass
class HookedSite:
    """Stand-in for a capture site: what a sink reads from the ``site`` argument."""

    site_name: str
    site_kind: str


def mha_module_names(model: nn.Module) -> list[str]:
    """Official names of every ``nn.MultiheadAttention`` in ``model``."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]


def attach_mha_hooks(
    model: nn.Module,
    names: Iterable[str] | None,
    sink: Callable[[HookedSite, dict[str, torch.Tensor]], None],
) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward hooks on the named ``nn.MultiheadAttention`` modules of ``model``.

    Each call hands ``sink(site, {"weights": w})`` the module's second output, head-averaged
    (N, L, S), where ``site`` has ``site_name`` (the name relative to ``model``) and ``site_kind``.
    ``names=None`` hooks every MHA. Returns the handles (call ``.remove()`` on each to detach).
    A call made with ``need_weights=False`` has no weights and is skipped.
    """
    modules = dict(model.named_modules())
    wanted = mha_module_names(model) if names is None else list(names)
    handles = []
    for name in wanted:
        module = modules.get(name)
        if not isinstance(module, nn.MultiheadAttention):
            found = "not found" if module is None else f"a {type(module).__name__}"
            raise ValueError(f"attach_mha_hooks: {name!r} is {found}, not an nn.MultiheadAttention")
        site = HookedSite(site_name=name, site_kind=attention_kind(name))

        def hook(_module, _args, output, site=site):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is not None:
                sink(site, {"weights": weights.detach()})

        handles.append(module.register_forward_hook(hook))
    return handles


__all__ = [
    "CODE_ENV",
    "DEFAULT_MODULES",
    "MODULES_ENV",
    "Detectron2VideoModel",
    "HookedSite",
    "add_code_paths",
    "attach_mha_hooks",
    "build_detectron2_model",
    "code_paths_from_env",
    "import_user_modules",
    "load_detectron2_config",
    "mha_module_names",
    "module_names_from_env",
    "require_detectron2",
]
