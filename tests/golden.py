"""Access to the official model's reference outputs in ``../shared/golden/`` (read-only).

Tests use :func:`golden_case` to get a case's config, weights, inputs, outputs and intermediate
tensors, and :func:`assert_close_ref` for the README's recommended per-tensor tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.shared_data import SHARED, require_shared

GOLDEN = SHARED / "golden"
CASES = ("r50_online_tiny", "r50_offline_tiny", "vitadapter_offline_tiny")


@dataclass
class GoldenCase:
    """One folder of ``shared/golden``; tensors are loaded lazily and cached."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @cached_property
    def cfg(self):
        """The case's resolved config (``config.yaml`` is a full ``cfg.dump()``)."""
        try:
            from dvis_attn_pl.config import load_config
        except ImportError:  # config loader not there yet: read the full dump directly
            import yaml
            from fvcore.common.config import CfgNode

            return CfgNode(yaml.safe_load(self.config_path.read_text()))
        return load_config(self.config_path)

    @cached_property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "model.safetensors"))

    @cached_property
    def inputs(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "inputs.safetensors"))

    @cached_property
    def inputs_meta(self) -> dict:
        return json.loads((self.path / "inputs.json").read_text())

    @cached_property
    def outputs(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "outputs.safetensors"))

    @cached_property
    def outputs_meta(self) -> dict:
        return json.loads((self.path / "outputs.json").read_text())

    @cached_property
    def intermediates(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "intermediates.safetensors"))

    @cached_property
    def intermediates_meta(self) -> dict:
        return json.loads((self.path / "intermediates.json").read_text())

    @cached_property
    def attn_per_head(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "attn_per_head.safetensors"))

    @property
    def num_videos(self) -> int:
        return len(self.inputs_meta["videos"])

    def batched_inputs(self, i: int) -> list[dict]:
        """The official model's input for video ``i``: ``[dict(image=[T x (3,h,w) uint8], ...)]``."""
        meta = {k: v for k, v in self.inputs_meta["videos"][i].items() if k != "mapper_image_hw"}
        frames = self.inputs[f"v{i}.image_mapper_uint8_TCHW"]
        return [dict(image=list(frames.unbind(0)), **meta)]

    def sub_state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """Entries under ``prefix`` (e.g. ``"tracker."``) with the prefix removed."""
        return {k[len(prefix) :]: v for k, v in self.state_dict.items() if k.startswith(prefix)}

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Intermediates whose key starts with ``prefix``."""
        return {k: v for k, v in self.intermediates.items() if k.startswith(prefix)}


def golden_case(name: str) -> GoldenCase:
    """The named case, or skip the test when ``../shared/golden`` is absent."""
    path = GOLDEN / name
    require_shared(path, f"golden case {name}")
    return GoldenCase(path)


def assert_close_ref(actual: torch.Tensor, ref: torch.Tensor, name: str = "", rel: float = 1e-4, atol: float = 1e-6):
    """``max|a-b| <= rel * max|ref| + atol`` (the golden README's per-tensor tolerance)."""
    actual = actual.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    if ref.numel() == 0:
        return
    err = (actual - ref).abs().max().item()
    bound = rel * ref.abs().max().item() + atol
    assert err <= bound, f"{name}: max abs diff {err:.3g} > {bound:.3g}"
