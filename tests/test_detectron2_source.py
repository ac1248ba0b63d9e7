"""``--model-source detectron2``: hooks, configuration errors, and the official model against the golden data.

The golden comparison needs detectron2 and the official DVIS-DAQ code (with the golden README's two
CPU patches) importable: point ``DVIS_ATTN_PL_D2_CODE`` at the code folder. Without detectron2 those
tests skip; the hook and error tests run everywhere.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch import nn

from dvis_attn_pl.model import detectron2_source as d2s
from dvis_attn_pl.utils.errors import UserError

from .golden import assert_outputs_match, golden_case

TRACKER_MHA = "tracker.transformer_cross_attention_layers.0.multihead_attn"


class _TwoAttentions(nn.Module):
    """A toy model with two MHAs under official-looking names."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = nn.Module()
        layer = nn.Module()
        layer.multihead_attn = nn.MultiheadAttention(16, 4)
        self.tracker.transformer_cross_attention_layers = nn.ModuleList([layer])
        self.other = nn.MultiheadAttention(16, 2)
        self.proj = nn.Linear(16, 16)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        x = self.tracker.transformer_cross_attention_layers[0].multihead_attn(q, kv, kv)[0]
        return self.other(x, x, x, need_weights=False)[0]


def test_attach_mha_hooks_hands_head_averaged_weights_to_sink():
    torch.manual_seed(0)
    model = _TwoAttentions().eval()
    q, kv = torch.randn(3, 2, 16), torch.randn(5, 2, 16)
    seen = []
    handles = d2s.attach_mha_hooks(model, None, lambda site, t: seen.append((site, t)))
    assert len(handles) == 2
    with torch.no_grad():
        model(q, kv)
        _, expected = model.tracker.transformer_cross_attention_layers[0].multihead_attn(q, kv, kv)
    # the second MHA ran with need_weights=False: nothing to hand out
    assert len(seen) == 2  # the first call (in forward) and the direct reference call
    site, tensors = seen[0]
    assert site.site_name == TRACKER_MHA and site.site_kind == "tracker_cross"
    assert set(tensors) == {"weights"} and tensors["weights"].shape == (2, 3, 5)
    torch.testing.assert_close(tensors["weights"], expected, rtol=0, atol=0)
    torch.testing.assert_close(tensors["weights"].sum(-1), torch.ones(2, 3))
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        model(q, kv)
    assert len(seen) == 2


def test_attach_mha_hooks_rejects_names_that_are_not_mha():
    model = _TwoAttentions()
    with pytest.raises(ValueError, match="proj.*Linear"):
        d2s.attach_mha_hooks(model, ["proj"], lambda *a: None)
    with pytest.raises(ValueError, match="not found"):
        d2s.attach_mha_hooks(model, ["tracker.nope"], lambda *a: None)
    assert d2s.mha_module_names(model) == [TRACKER_MHA, "other"]


def test_env_lists(monkeypatch, tmp_path):
    monkeypatch.delenv(d2s.MODULES_ENV, raising=False)
    assert d2s.module_names_from_env() == ["mask2former", "mask2former_video", "dvis_Plus", "dvis_daq"]
    monkeypatch.setenv(d2s.MODULES_ENV, f"a, b{os.pathsep}c,")
    assert d2s.module_names_from_env() == ["a", "b", "c"]
    monkeypatch.setenv(d2s.CODE_ENV, f"{tmp_path}{os.pathsep}{tmp_path / 'x'}")
    assert d2s.code_paths_from_env() == [str(tmp_path), str(tmp_path / "x")]
    with pytest.raises(UserError, match="does not exist"):
        d2s.add_code_paths(d2s.code_paths_from_env())


def test_import_failure_is_a_one_line_user_error(monkeypatch, tmp_path):
    (tmp_path / "broken_user_pkg.py").write_text("raise RuntimeError('needs a GPU\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as err:
        d2s.import_user_modules(["broken_user_pkg"])
    assert "\n" not in str(err.value) and "broken_user_pkg" in str(err.value) and "needs a GPU" in str(err.value)
    with pytest.raises(UserError, match=d2s.CODE_ENV):
        d2s.import_user_modules(["surely_not_a_module_xyz"])


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is not None, reason="detectron2 is installed")
def test_missing_detectron2_says_how_to_install():
    with pytest.raises(UserError, match="detectron2 is not importable.*install") as err:
        d2s.build_detectron2_model("x.yaml")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- with detectron2


def _official_code_or_skip() -> None:
    pytest.importorskip("detectron2")
    if not d2s.code_paths_from_env():
        pytest.skip(f"set {d2s.CODE_ENV} to the (CPU-patched) official DVIS_DAQ folder")


@pytest.mark.parametrize("name", ["r50_online_tiny", "r50_offline_tiny"])
def test_official_model_reproduces_golden_outputs(name):
    _official_code_or_skip()
    case = golden_case(name)
    model = d2s.build_detectron2_model(case.config_path, ckpt=case.path / "model.safetensors")
    assert not model.official.training and not hasattr(model, "last_inference")
    first_cross = "sem_seg_head.predictor.transformer_cross_attention_layers.0.multihead_attn"
    captured: list[torch.Tensor] = []
    handles = d2s.attach_mha_hooks(
        model.official, [first_cross], lambda site, t: captured.append(t["weights"]) if not captured else None
    )
    try:
        for video in range(case.num_videos):
            assert_outputs_match(model(case.batched_inputs(video)), case, video, check_ids=False)
    finally:
        for handle in handles:
            handle.remove()
    ref = case.intermediates[f"v0.attn.{first_cross}.win0"]
    torch.testing.assert_close(captured[0], ref, atol=1e-5, rtol=0)
