"""Checkpoint reading (.pth/.pt, detectron2 .pkl, .safetensors) and strict loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dvis_attn_pl.model.checkpoint import CheckpointError, load_checkpoint, read_state_dict
from dvis_attn_pl.model.conv_norm import Conv2d, FrozenBatchNorm2d
from dvis_attn_pl.utils.errors import UserError
from tests.golden import golden_case


class Tiny(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = Conv2d(3, width, kernel_size=1, bias=False, norm=FrozenBatchNorm2d(width))
        self.head = nn.Linear(width, 2)
        self.register_buffer("pixel_mean", torch.zeros(3), persistent=False)


def random_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert sorted(got) == sorted(state)
    for k, v in state.items():
        torch.testing.assert_close(got[k], torch.as_tensor(v).to(got[k].dtype), msg=k)


class TrainerState:  # a harmless non-tensor object, as detectron2's "trainer" entry may hold
    def __init__(self) -> None:
        self.iteration = 7


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_torch_round_trip(tmp_path, suffix, wrapped):
    state = random_state(Tiny(), 1)
    path = tmp_path / f"w{suffix}"
    torch.save({"model": state, "iteration": 3} if wrapped else state, path)
    model = Tiny()
    load_checkpoint(model, path)
    assert_loaded(model, state)
    assert sorted(read_state_dict(path)) == sorted(state)


@pytest.mark.parametrize("layout", ["detectron2", "bare", "numpy2_protocol5"])
def test_detectron2_pkl_round_trip(tmp_path, layout):
    state = {
        k: v.numpy().astype(np.float64) for k, v in random_state(Tiny(), 2).items()
    }  # d2 pkls may be fp64
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        if layout == "detectron2":
            pickle.dump(
                {"model": state, "__author__": "Facebook", "matching_heuristics": False}, f, protocol=2
            )
        elif layout == "bare":
            pickle.dump({**state, "__author__": "someone"}, f, protocol=2)
        else:
            pickle.dump({"model": state}, f, protocol=5)
    model = Tiny()
    load_checkpoint(model, path)
    assert_loaded(model, state)
    assert model.head.weight.dtype == torch.float32


def test_safetensors_round_trip_and_dtype_cast(tmp_path):
    state = {k: v.half() for k, v in random_state(Tiny(), 3).items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = Tiny()
    load_checkpoint(model, path)
    assert model.head.weight.dtype == torch.float32
    assert_loaded(model, state)


def test_golden_backbone_weights_load(tmp_path):
    case = golden_case("r50_online_tiny")
    from dvis_attn_pl.model.backbone import build_backbone

    holder = nn.Module()
    holder.backbone = build_backbone(case.cfg)
    sub = {k: v for k, v in case.state_dict.items() if k.startswith("backbone.")}
    torch.save({"model": sub}, tmp_path / "model_final.pth")
    load_checkpoint(holder, tmp_path / "model_final.pth")
    assert torch.equal(
        holder.backbone.res4[5].conv3.norm.running_var, sub["backbone.res4.5.conv3.norm.running_var"]
    )


def test_mismatch_message_is_short_and_counts(tmp_path):
    model = Tiny()
    state = random_state(model, 4)
    del state["conv.norm.running_mean"]
    state["head.weight"] = torch.zeros(5, 4)
    for i in range(8):
        state[f"extra.{i}"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600
    assert "1 missing, 8 unexpected, 1 with a wrong shape" in msg
    assert "missing: conv.norm.running_mean" in msg
    assert "extra.0, extra.1, extra.2, extra.3, extra.4 ... and 3 more" in msg
    assert "head.weight (5, 4) vs model (2, 4)" in msg
    assert str(path) in msg
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_non_persistent_buffers_are_not_expected_but_extra_ones_are_refused(tmp_path):
    model = Tiny()
    state = random_state(model, 5)
    torch.save(state, tmp_path / "ok.pth")
    load_checkpoint(model, tmp_path / "ok.pth")  # no pixel_mean needed
    torch.save({**state, "pixel_mean": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected: pixel_mean"):
        load_checkpoint(model, tmp_path / "extra.pth")


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["torch_zip.pth", "raw_pickle.pth", "detectron2.pkl", "torch_zip.pkl"])
def test_malicious_pickle_is_refused(tmp_path, kind):
    marker = tmp_path / "PWNED"
    path = tmp_path / kind
    weights = {"head.weight": torch.zeros(2, 4)}
    if kind.startswith("torch_zip"):
        torch.save({"model": weights, "x": _Payload(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"model": {"head.weight": np.zeros((2, 4))}, "x": _Payload(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as info:
        read_state_dict(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(Tiny(), path)
    assert not marker.exists()


def test_trust_allows_other_objects(tmp_path):
    state = random_state(Tiny(), 6)
    path = tmp_path / "full.pth"
    torch.save({"model": state, "trainer": TrainerState()}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_state_dict(path)
    model = Tiny()
    load_checkpoint(model, path, trust=True)
    assert_loaded(model, state)


@pytest.mark.parametrize("suffix", [".pth", ".pkl", ".safetensors"])
def test_truncated_file_is_one_line_error(tmp_path, suffix):
    state = {"w": torch.randn(5000)}
    full = tmp_path / f"full{suffix}"
    if suffix == ".pth":
        torch.save({"model": state}, full)
    elif suffix == ".pkl":
        with open(full, "wb") as f:
            pickle.dump({"model": {"w": state["w"].numpy()}}, f, protocol=2)
    else:
        save_file(state, str(full))
    assert torch.equal(read_state_dict(full)["w"], state["w"])
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        read_state_dict(cut)
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


def test_missing_and_odd_files(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="not a file"):
        read_state_dict(tmp_path)
    (tmp_path / "junk.pth").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"model": {"a": 3.5}}, tmp_path / "scalar.pth")
    with pytest.raises(CheckpointError, match="'a' is a float"):
        read_state_dict(tmp_path / "scalar.pth")
