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
# The shrunk ViT of the ViT-Adapter case (its README): dim 64, depth 4, 4 heads, adapter 4 deform
# heads, conv_inplane 16, one ViT block per interaction.
TINY_VIT_SIZES = {
    "EMBED_DIM": 64,
    "DEPTH": 4,
    "NUM_HEADS": 4,
    "DEFORM_NUM_HEADS": 4,
    "CONV_INPLANE": 16,
    "INTERACTION_INDEXES": [[0, 0], [1, 1], [2, 2], [3, 3]],
}


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


def prediction_order(scores, labels) -> torch.Tensor:
    """The order predictions are paired in: descending score, equal scores by ascending label, then by
    position (a stable sort). The one tie-breaking rule of every golden comparison."""
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels)
    by_label = torch.sort(labels, stable=True).indices
    return by_label[torch.sort(scores[by_label], descending=True, stable=True).indices]


def assert_outputs_match(out: dict, case: GoldenCase, video: int, label: str = "", check_ids: bool = True) -> None:
    """The golden README's comparison of one video's official outputs: pair predictions by
    :func:`prediction_order`, then labels (and ``pred_ids``) exactly, scores within 1e-5, masks within
    max(2, 0.1% of T*H*W) differing pixels; ``image_size`` and ``task`` when the output has them."""
    ref = {k: case.outputs[f"v{video}.{k}"] for k in ("pred_scores", "pred_labels", "pred_ids", "pred_masks")}
    scores = torch.tensor(out["pred_scores"], dtype=ref["pred_scores"].dtype)
    labels = torch.tensor(out["pred_labels"])
    assert scores.shape == ref["pred_scores"].shape, label
    mine = prediction_order(scores, labels)
    theirs = prediction_order(ref["pred_scores"], ref["pred_labels"])
    torch.testing.assert_close(scores[mine], ref["pred_scores"][theirs], atol=1e-5, rtol=0, msg=label or None)
    assert labels[mine].tolist() == ref["pred_labels"][theirs].tolist(), label
    if check_ids:
        assert torch.tensor(out["pred_ids"])[mine].tolist() == ref["pred_ids"][theirs].tolist(), label
    masks, ref_masks = torch.stack(out["pred_masks"])[mine], ref["pred_masks"][theirs].bool()
    assert masks.dtype == torch.bool and masks.shape == ref_masks.shape, label
    t, h, w = masks.shape[1:]
    diff = (masks != ref_masks).flatten(1).sum(1)
    assert int(diff.max()) <= max(2, int(0.001 * t * h * w)), f"{label}: differing pixels {diff.tolist()}"
    meta = case.inputs_meta["videos"][video]
    if "image_size" in out:
        assert tuple(out["image_size"]) == (meta["height"], meta["width"]), label
    if "task" in out:
        assert out["task"] == "vis", label


def golden_config(case: GoldenCase):
    """The case's own (official) config; for the ViT-Adapter case with its shrunk ViT sizes set."""
    cfg = case.cfg.clone()
    if case.name == "vitadapter_offline_tiny":
        cfg.defrost()
        for key, value in TINY_VIT_SIZES.items():
            cfg.MODEL.VIT_ADAPTER[key] = value
    return cfg


def golden_model(name: str, cfg=None):
    """``(case, model)``: the case's official weights loaded strictly into ``cfg`` (default:
    :func:`golden_config`)."""
    from dvis_attn_pl import build_model, load_checkpoint

    case = golden_case(name)
    model = build_model(golden_config(case) if cfg is None else cfg)
    load_checkpoint(model, case.path / "model.safetensors")
    return case, model
