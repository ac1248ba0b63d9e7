"""Command line: help texts, argument errors, up-front path checks, dispatch to the commands."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from dvis_attn_pl import cli
from dvis_attn_pl.config import config_path
from dvis_attn_pl.utils.errors import UserError
from dvis_attn_pl.weights import SHIPPED_WEIGHTS

REPO = Path(__file__).resolve().parents[1]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def recorded(monkeypatch):
    """Replace the body of every command by a recorder (the bodies are not this module's job)."""
    calls: list = []
    for name in cli.COMMANDS:
        module = importlib.import_module(f"dvis_attn_pl.commands.{name}")
        monkeypatch.setattr(module, f"run_{name}", lambda args, _n=name: calls.append((_n, args)) or 0)
    return calls


def test_module_help_through_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "dvis_attn_pl", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for name in cli.COMMANDS:
        assert name in proc.stdout
    assert "examples:" in proc.stdout


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_subcommand_help(capsys, command):
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0
    assert f"usage: dvis_attn_pl {command}" in out and "examples:" in out
    assert f"python -m dvis_attn_pl {command}" in out


def test_run_flags_in_help(capsys):
    _, out, _ = run_main(capsys, "test", "--help")
    for flag in ("--ckpt", "--model-config", "--data", "--frames", "--out", "--devices", "--accelerator",
                 "--strategy", "--precision", "--num-nodes", "--capture", "--max-videos", "--model-source",
                 "--trust-checkpoint", "KEY VALUE"):
        assert flag in out, flag


@pytest.mark.parametrize(
    "argv",
    [
        ["test", "--bogus"],
        ["--bogus"],
        ["evaluate", "--gt", "x.json"],  # --results missing
        ["test", "--capture", "everything"],
        ["predict", "--max-videos", "0"],
        ["frobnicate"],
        [],
    ],
)
def test_argument_errors_are_one_line_exit_2(capsys, argv):
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith("dvis_attn_pl")


@pytest.mark.parametrize(
    ("argv", "missing", "kind"),
    [
        (["test", "--ckpt", "{p}"], "gone.pth", "file"),
        (["predict", "--model-config", "{p}"], "gone.yaml", "file"),
        (["test", "--data", "{p}", "--frames", "."], "gone.json", "file"),
        (["test", "--data", "{here}", "--frames", "{p}"], "gone_frames", "directory"),
        (["evaluate", "--gt", "{p}", "--results", "{here}"], "gt.json", "file"),
        (["evaluate", "--gt", "{here}", "--results", "{p}"], "results.json", "file"),
        (["analyze", "{p}"], "no_run", "directory"),
    ],
)
def test_missing_paths(capsys, tmp_path, recorded, argv, missing, kind):
    here = Path(__file__)
    path = tmp_path / missing
    argv = [a.format(p=path, here=here) for a in argv]
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and recorded == []
    assert one_error_line(err) == f"dvis_attn_pl: error: {path}: no such {kind}"


def test_wrong_kind_of_path(capsys, tmp_path, recorded):
    code, _, err = run_main(capsys, "test", "--ckpt", str(tmp_path))
    assert code == 2 and "is a directory" in one_error_line(err)
    code, _, err = run_main(capsys, "analyze", __file__)
    assert code == 2 and "expected a directory" in one_error_line(err)


def test_override_errors(capsys, recorded):
    code, _, err = run_main(capsys, "test", "MODEL.NOT_A_KEY", "1")
    assert code == 2 and "MODEL.NOT_A_KEY" in one_error_line(err) and "unknown config key" in err
    code, _, err = run_main(capsys, "test", "INPUT.MIN_SIZE_TEST")
    assert code == 2 and "KEY VALUE pairs" in one_error_line(err)
    code, _, err = run_main(capsys, "test", "INPUT.MIN_SIZE_TEST", "360", "--ckpt", "x.pth")
    assert code == 2 and "--ckpt" in one_error_line(err)
    code, _, err = run_main(capsys, "predict", "INPUT.MIN_SIZE_TEST", "small")
    assert code == 2 and "expects int" in one_error_line(err)
    assert recorded == []


def test_dispatch_with_defaults(capsys, recorded):
    code, _, _ = run_main(capsys, "test")
    assert code == 0
    (name, args), = recorded
    assert name == "test" and args.model_config == str(config_path("tiny_fish"))
    assert (args.ckpt, args.weights) == (str(SHIPPED_WEIGHTS), "shipped")  # the shipped trained weights
    assert (args.data, args.frames, args.out, args.opts) == (None, None, None, [])
    assert (args.capture, args.model_source, args.trust_checkpoint) == ("temporal", "native", False)
    assert (args.devices, args.accelerator, args.strategy, args.precision, args.num_nodes) == (
        "auto", "auto", "auto", "32-true", 1)


def test_weights_are_shipped_random_on_request_or_refused(capsys, recorded):
    code, _, _ = run_main(capsys, "test", "--random-weights")
    assert code == 0 and (recorded[-1][1].ckpt, recorded[-1][1].weights) == (None, "random")
    code, _, err = run_main(capsys, "predict", "--model-config", "dvis_daq_r50_online_ytvis19")
    assert code == 2 and "--random-weights" in one_error_line(err)
    code, _, _ = run_main(capsys, "predict", "--model-config", "dvis_daq_r50_online_ytvis19", "--random-weights")
    assert code == 0 and recorded[-1][1].weights == "random"
    code, _, _ = run_main(capsys, "test", "--model-config", "tiny_fish")
    assert code == 0 and recorded[-1][1].weights == "shipped"


def test_dispatch_passes_flags_and_overrides(capsys, tmp_path, recorded):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"")
    code, _, _ = run_main(
        capsys, "predict", "--ckpt", str(ckpt), "--model-config", "dvis_daq_r50_online_ytvis19",
        "--devices", "2", "--num-nodes", "3", "--capture", "all", "--max-videos", "5", "--trust-checkpoint",
        "INPUT.MIN_SIZE_TEST", "360", "MODEL.WEIGHTS", "",
    )
    assert code == 0
    (name, args), = recorded
    assert name == "predict" and args.model_config == str(config_path("dvis_daq_r50_online_ytvis19"))
    assert args.opts == ["INPUT.MIN_SIZE_TEST", "360", "MODEL.WEIGHTS", ""]
    assert (args.devices, args.num_nodes, args.capture, args.max_videos, args.trust_checkpoint) == (
        "2", 3, "all", 5, True)


def test_ckpt_without_config_leaves_config_unset(capsys, tmp_path, recorded):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"")
    assert run_main(capsys, "test", "--ckpt", str(ckpt))[0] == 0
    assert recorded[0][1].model_config is None


def test_evaluate_and_analyze_dispatch(capsys, tmp_path, recorded):
    here = str(Path(__file__))
    assert run_main(capsys, "evaluate", "--gt", here, "--results", here, "--json")[0] == 0
    assert run_main(capsys, "analyze", str(tmp_path))[0] == 0
    (n1, a1), (n2, a2) = recorded
    assert (n1, a1.gt, a1.results, a1.json) == ("evaluate", here, here, True)
    assert (n2, a2.run_dir) == ("analyze", str(tmp_path))


def test_command_failures(capsys, monkeypatch):
    module = importlib.import_module("dvis_attn_pl.commands.analyze")

    def not_yet(args):
        raise NotImplementedError

    def user_mistake(args):
        raise UserError("runs/x: not a run directory\n(no manifest.json)")

    monkeypatch.setattr(module, "run_analyze", not_yet)
    code, _, err = run_main(capsys, "analyze", ".")
    assert code == 2 and one_error_line(err) == "dvis_attn_pl: error: 'analyze' is not available yet"
    monkeypatch.setattr(module, "run_analyze", user_mistake)
    code, _, err = run_main(capsys, "analyze", ".")
    assert code == 2
    assert one_error_line(err) == "dvis_attn_pl: error: runs/x: not a run directory (no manifest.json)"
    monkeypatch.setattr(module, "run_analyze", lambda args: 3)
    assert run_main(capsys, "analyze", ".")[0] == 3


def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.startswith("dvis_attn_pl ")


def test_an_error_from_a_dataloader_worker_is_its_original_line():
    wrapped = (
        "Caught FrameError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "worker.py", line 375, in _worker_loop\n    data = fetcher.fetch(index)\n'
        "dvis_attn_pl.data.frame_files.FrameError: frames/a/00000.jpg: cannot decode frame (OSError: truncated)\n"
    )
    assert cli.worker_message(wrapped) == "frames/a/00000.jpg: cannot decode frame (OSError: truncated)"
    assert cli.worker_message("frames/a.jpg: missing") == "frames/a.jpg: missing"


def test_integers_past_64_bits_keep_their_value_when_read():
    from dvis_attn_pl.metrics.ytvis_io import _loads

    assert _loads(b'{"videos": [{"id": 1180591620717411303424}]}')["videos"][0]["id"] == 2**70


def test_each_command_closes_its_rank_guard(capsys, recorded):
    """An in-process command (a notebook, these tests) leaves no watcher thread behind, so a later
    Lightning observer's child ranks are not adopted by an old command's guard."""
    import threading

    from dvis_attn_pl.run import ddp_guard

    code, _, _ = run_main(capsys, "test")
    first = ddp_guard._guard
    assert code == 0 and [c for c, _ in recorded] == ["test"]
    assert first is not None and first.closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "dvis-attn-pl-rank-watch"]
    run_main(capsys, "predict")
    assert ddp_guard._guard is not first and ddp_guard._guard.closed.is_set()  # a fresh guard per command
    assert not [t for t in threading.enumerate() if t.name == "dvis-attn-pl-rank-watch"]
