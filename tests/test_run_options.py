"""The CLI hands the run frozen options (no argparse Namespace below it) and the fingerprint keeps its
values, so run directories written before still resume."""

from __future__ import annotations

import dataclasses

import pytest

from dvis_attn_pl.cli import _prepare, build_parser, run_options
from dvis_attn_pl.run.options import RunOptions
from dvis_attn_pl.run.resume import run_fingerprint


def _options(*argv: str) -> RunOptions:
    args = build_parser().parse_args(list(argv))
    args.argv = tuple(argv)
    _prepare(args)
    return run_options(args)


def test_options_are_frozen_and_carry_the_cli_defaults():
    opts = _options("test", "--max-videos", "2")
    assert opts.command == "test" and opts.argv == ("test", "--max-videos", "2")
    assert opts.capture == "temporal"  # the CLI default (resume.py's fallback said "none")
    assert opts.weights == "shipped" and opts.ckpt and not opts.random_weights
    assert opts.hardware.precision == "32-true" and opts.hardware.num_nodes == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.capture = "none"  # type: ignore[misc]


def test_fingerprint_values_are_those_of_earlier_versions(small_set, tmp_path):
    from dvis_attn_pl.config import config_path, load_config

    data_json, frames = small_set / "valid.json", small_set / "JPEGImages"
    opts = _options("predict", "--random-weights", "--capture", "none", "--max-videos", "1", "--precision", "bf16-mixed")
    cfg = load_config(config_path("tiny_fish"))
    fp = run_fingerprint(opts, cfg, data_json, frames)
    assert list(fp) == ["command", "version", "config_sha256", "checkpoint", "data", "frames", "max_videos",
                        "capture", "precision", "model_source"]
    assert (fp["command"], fp["checkpoint"], fp["max_videos"], fp["capture"], fp["precision"], fp["model_source"]) == (
        "predict", None, 1, "none", "bf16-mixed", "native")


@pytest.mark.parametrize(
    ("flag", "lightning", "tf32"),
    [("32-true", "32-true", False), ("tf32", "32-true", True), ("bf16-mixed", "bf16-mixed", False)],
)
def test_precision_tf32_is_float32_with_tensor_cores_and_the_default_keeps_them_off(tmp_path, flag, lightning, tf32):
    """``--precision tf32`` is Lightning's float32 with TF32 matmuls and cuDNN convolutions allowed;
    every other precision turns both off (PyTorch itself allows TF32 convolutions by default)."""
    import torch

    from dvis_attn_pl.run.runner import build_trainer

    opts = _options("predict", "--random-weights", "--capture", "none", "--precision", flag)
    assert opts.hardware.precision == flag
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
        trainer = build_trainer(opts.hardware, tmp_path, [], tensorboard=False)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
        assert trainer.precision == lightning
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
