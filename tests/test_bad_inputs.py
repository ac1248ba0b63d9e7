"""The bad-input catalogue (issue 8): each bad input through the real command line, as a user gives it.

Every case must end with exactly one stderr line ``dvis_attn_pl: error: ...`` naming the file (or
video id) and the problem, exit status 2, no traceback, and no run directory. Inputs are checked
before anything is written, so only the cases that need the model (checkpoints) take seconds.
Then what must work: empty and one-frame videos, online and offline, and a trusted checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_run import SMALL, cli_env, data_args, run_cli

# "dvis_attn_pl: error: ..."; argparse-level errors name the subcommand: "dvis_attn_pl predict: error: ..."
ERROR = re.compile(r"^dvis_attn_pl( (test|predict|evaluate|analyze))?: error: ")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ONLINE = ["MODEL.META_ARCHITECTURE", "DVIS_DAQ_online"]
RESULT_FILES = ("results.json", "results_temporal.json", "metrics.json", "image_dimensions.json")


# ---------------------------------------------------------------------------------- the inputs
# (the data_set and tiny_state fixtures are in tests/conftest.py, shared with test_bad_inputs_2.py)
@dataclass
class Ctx:
    """What a case builds its bad input from: the good data set, a folder of its own, the run dir."""

    data: Path
    tmp: Path
    fixture: Callable[[str], object]
    out: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out = self.tmp / "run"

    @property
    def gt(self) -> dict:
        """A fresh copy of the data set's json."""
        return json.loads((self.data / "valid.json").read_text())

    def write(self, name: str, content: bytes | str | object) -> Path:
        """``content`` (bytes, text, or an object written as JSON) into ``tmp/name``."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content))
        return path

    def frames(self) -> Path:
        """A private copy of the frames folder, to damage."""
        return Path(shutil.copytree(self.data / "JPEGImages", self.tmp / "frames"))

    def run(
        self,
        command: str = "predict",
        data: Path | None = None,
        frames: Path | None = None,
        flags: tuple[str, ...] = (),
        opts: tuple[str, ...] = (),
        out: Path | None = None,
    ) -> list[str]:
        """``COMMAND --data --frames --out --capture none FLAGS INPUT.MIN_SIZE_TEST 64 OPTS``."""
        data = data or self.data / "valid.json"
        frames = frames or self.data / "JPEGImages"
        paths = ["--data", str(data), "--frames", str(frames), "--out", str(out or self.out)]
        return [command, *paths, "--capture", "none", *flags, *SMALL, *opts]


@dataclass(frozen=True)
class Case:
    """A bad input: ``build`` makes it and returns the command line; ``expect`` must be in the error
    line (``{tmp}`` / ``{data}`` stand for the case's folder / the good data set)."""

    build: Callable[[Ctx], list[str]]
    expect: tuple[str, ...]


def _json_case(mutate: Callable[[dict], None], *expect: str, command: str = "predict") -> Case:
    """The data set's json changed by ``mutate``, written as ``{tmp}/valid.json``."""

    def build(ctx: Ctx) -> list[str]:
        gt = ctx.gt
        mutate(gt)
        return ctx.run(command, ctx.write("valid.json", gt))

    return Case(build, ("{tmp}/valid.json", *expect))


def _frames_case(damage: Callable[[Path, dict], None], *expect: str) -> Case:
    """A copy of the frames damaged by ``damage(frames, gt)`` (which may change the json too)."""

    def build(ctx: Ctx) -> list[str]:
        frames, gt = ctx.frames(), ctx.gt
        damage(frames, gt)
        return ctx.run("predict", ctx.write("valid.json", gt), frames)

    return Case(build, expect)


def _ckpt_case(make: Callable[[Ctx], Path], *expect: str) -> Case:
    """``predict --ckpt FILE --model-config tiny_cpu`` with the file ``make`` writes."""

    def build(ctx: Ctx) -> list[str]:
        return ctx.run(flags=("--ckpt", str(make(ctx)), "--model-config", "tiny_cpu"))

    return Case(build, expect)


def _config_case(text: str, *expect: str) -> Case:
    """``--model-config {tmp}/model.yaml`` holding ``text`` (``{configs}``: the repository's configs/)."""

    def build(ctx: Ctx) -> list[str]:
        path = ctx.write("model.yaml", text.format(configs=CONFIGS))
        return ctx.run(flags=("--model-config", str(path)))

    return Case(build, ("{tmp}/model.yaml", *expect))


def _evaluate_case(results: object, *expect: str, gt: Callable[[dict], None] | None = None) -> Case:
    """``evaluate --gt GT --results {tmp}/results.json`` (GT: the data set's json, changed by ``gt``)."""

    def build(ctx: Ctx) -> list[str]:
        gt_path = ctx.data / "valid.json"
        if gt is not None:
            obj = ctx.gt
            gt(obj)
            gt_path = ctx.write("gt.json", obj)
        raw = results if isinstance(results, bytes) else json.dumps(results)
        return ["evaluate", "--gt", str(gt_path), "--results", str(ctx.write("results.json", raw))]

    return Case(build, expect)


def _analyze_case(tamper: Callable[[Path], None], *expect: str) -> Case:
    """``analyze`` of a copy of a real run directory changed by ``tamper``."""

    def build(ctx: Ctx) -> list[str]:
        runs = ctx.fixture("edge_runs")
        run = Path(shutil.copytree(runs["offline"], ctx.tmp / "copied_run"))
        tamper(run)
        return ["analyze", str(run), "--no-video", "--no-tensorboard"]

    return Case(build, expect)


# ---------------------------------------------------------------------------------- checkpoints
def _save(ctx: Ctx, name: str, obj: object) -> Path:
    import torch

    path = ctx.tmp / name
    torch.save(obj, path)
    return path


def _state(ctx: Ctx) -> dict:
    return dict(ctx.fixture("tiny_state"))


def _truncated(ctx: Ctx) -> Path:
    whole = _save(ctx, "whole.pth", {"model": _state(ctx)}).read_bytes()
    return ctx.write("half.pth", whole[: len(whole) // 2])


def _without_key(ctx: Ctx) -> Path:
    state = _state(ctx)
    state.pop("sem_seg_head.predictor.class_embed.bias")
    return _save(ctx, "missing.pth", {"model": state})


def _extra_key(ctx: Ctx) -> Path:
    import torch

    return _save(ctx, "extra.pth", {"model": {**_state(ctx), "head.not_in_model": torch.zeros(2)}})


def _wrong_shape(ctx: Ctx) -> Path:
    state = _state(ctx)
    key = "sem_seg_head.predictor.mask_embed.layers.0.weight"
    state[key] = state[key][:, :-1].clone()
    return _save(ctx, "shape.pth", {"model": state})


def _three_classes(ctx: Ctx) -> Path:
    """The tiny model trained for 3 classes instead of 5."""
    state = _state(ctx)
    for key, value in state.items():
        if key.endswith(("class_embed.weight", "class_embed.bias", "empty_weight")):
            state[key] = value[:4].clone()
    return _save(ctx, "three_classes.pth", {"model": state})


class Experiment:
    """A class instance someone pickled next to the weights."""

    def __init__(self) -> None:
        self.lr = 0.1


def _pickled_object(ctx: Ctx) -> Path:
    return _save(ctx, "object.pth", {"model": _state(ctx), "experiment": Experiment()})


def _pickled_function(ctx: Ctx) -> Path:
    return _save(ctx, "function.pth", {"model": _state(ctx), "hook": os.system})


def _pkl_with_object(ctx: Ctx) -> Path:
    state = {k: v.numpy() for k, v in _state(ctx).items()}
    return ctx.write("model_final.pkl", pickle.dumps({"model": state, "cfg": argparse.Namespace(a=1)}, protocol=2))


def trusted_checkpoint(state: dict, path: Path) -> Path:
    """A legitimate full-pickle checkpoint: the weights next to the training arguments."""
    import torch

    torch.save({"model": state, "args": argparse.Namespace(lr=0.1, epochs=3)}, path)
    return path


# ---------------------------------------------------------------------------------- json edits
def _video(gt: dict, i: int = 0) -> dict:
    return gt["videos"][i]


def _ann(gt: dict, i: int = 0) -> dict:
    return gt["annotations"][i]


def _set_first_name(name: str) -> Callable[[dict], None]:
    return lambda gt: _video(gt)["file_names"].__setitem__(0, name)


# ---------------------------------------------------------------------------------- frame damage
def _first_frame(frames: Path, gt: dict) -> Path:
    return frames / _video(gt)["file_names"][0]


def _other_size_frame(frames: Path, gt: dict) -> None:
    path = frames / _video(gt)["file_names"][1]
    Image.fromarray(np.zeros((48, 80, 3), np.uint8)).save(path)


def _random_jpg(frames: Path, gt: dict) -> None:
    name = _video(gt)["file_names"][0].replace(".png", ".jpg")
    (frames / name).write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _video(gt)["file_names"][0] = name


def _json_size_differs(frames: Path, gt: dict) -> None:
    gt.pop("annotations")  # their masks have the frames' size
    _video(gt).update(height=60, width=90)


def _frame_is_directory(frames: Path, gt: dict) -> None:
    path = _first_frame(frames, gt)
    path.unlink()
    path.mkdir()


def _tamper_manifest(run: Path, bad_path: str) -> None:
    path = run / "attention_maps" / "manifest.json"
    manifest = json.loads(path.read_text())
    next(iter(manifest["videos"].values()))["artifacts"][0]["path"] = bad_path
    path.write_text(json.dumps(manifest))


def _tamper_video_id(run: Path) -> None:
    path = run / "inference" / "results_temporal.json"
    records = json.loads(path.read_text())
    records[0]["video_id"] = "../../evil"
    path.write_text(json.dumps(records))


def _dangling_link(frames: Path, gt: dict) -> None:
    path = _first_frame(frames, gt)
    path.unlink()
    path.symlink_to(frames / "no_such_frame.png")


def _link_loop(frames: Path, gt: dict) -> None:
    path = _first_frame(frames, gt)
    path.unlink()
    path.symlink_to(path)


# ---------------------------------------------------------------------------------- the catalogue
CASES: dict[str, Case] = {
    # 1. checkpoints
    "ckpt missing": Case(
        lambda c: c.run(flags=("--ckpt", str(c.tmp / "nope.pth"), "--model-config", "tiny_cpu")),
        ("{tmp}/nope.pth", "no such file"),
    ),
    "ckpt is a directory": Case(
        lambda c: c.run(flags=("--ckpt", str(c.tmp), "--model-config", "tiny_cpu")),
        ("{tmp}", "is a directory, expected a file"),
    ),
    "ckpt zero bytes": _ckpt_case(lambda c: c.write("empty.pth", b""), "{tmp}/empty.pth", "is empty (0 bytes)"),
    "ckpt random bytes": _ckpt_case(
        lambda c: c.write("noise.pth", np.random.default_rng(1).bytes(4096)), "{tmp}/noise.pth", "truncated or corrupt"
    ),
    "ckpt truncated": _ckpt_case(_truncated, "{tmp}/half.pth", "truncated or corrupt"),
    "ckpt class instance": _ckpt_case(
        _pickled_object, "{tmp}/object.pth", "(tests.test_bad_inputs.Experiment)", "refused", "--trust-checkpoint"
    ),
    "ckpt function reference": _ckpt_case(_pickled_function, "{tmp}/function.pth", "(posix.system)", "--trust-checkpoint"),
    "ckpt holds a list": _ckpt_case(lambda c: _save(c, "list.pth", [1, 2]), "{tmp}/list.pth", "holds a list"),
    "ckpt missing key": _ckpt_case(
        _without_key, "{tmp}/missing.pth", "1 missing", "missing: sem_seg_head.predictor.class_embed.bias"
    ),
    "ckpt unexpected key": _ckpt_case(_extra_key, "{tmp}/extra.pth", "unexpected: head.not_in_model"),
    "ckpt wrong shape": _ckpt_case(
        _wrong_shape, "{tmp}/shape.pth", "wrong shape: sem_seg_head.predictor.mask_embed.layers.0.weight (64, 63)"
    ),
    "ckpt class count": _ckpt_case(
        _three_classes, "{tmp}/three_classes.pth", "the checkpoint has 3 classes", "NUM_CLASSES 5"
    ),
    "pkl with an object": _ckpt_case(_pkl_with_object, "{tmp}/model_final.pkl", "argparse.Namespace", "--trust-checkpoint"),
    "config class count vs data": Case(
        lambda c: c.run(opts=("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3")),
        ("{data}/valid.json", "5 categories", "NUM_CLASSES 3"),
    ),
    # 2. configs
    "config unknown key": _config_case(
        "_BASE_: {configs}/tiny_cpu.yaml\nMODEL:\n  MASK_FORMER:\n    NOT_A_KEY: 1\n", "MODEL.MASK_FORMER.NOT_A_KEY"
    ),
    "config string for int": _config_case(
        "_BASE_: {configs}/tiny_cpu.yaml\nINPUT:\n  MIN_SIZE_TEST: big\n", "INPUT.MIN_SIZE_TEST", "big"
    ),
    "config not yaml": _config_case("MODEL: [unclosed\n  X: {{\n", "YAML syntax error"),
    "config missing base": _config_case("_BASE_: no_such_base.yaml\n", "no_such_base.yaml", "not found"),
    "config is a list": _config_case("- 1\n- 2\n", "must be a mapping"),
    "override string for int": Case(
        lambda c: c.run(opts=("INPUT.MIN_SIZE_TEST", "abc")),
        ("overrides", "INPUT.MIN_SIZE_TEST", "'abc'"),
    ),
    "override unknown key": Case(
        lambda c: c.run(opts=("MODEL.NOT_A_KEY", "1")), ("overrides", "MODEL.NOT_A_KEY")
    ),
    "override without value": Case(
        lambda c: c.run(opts=("MODEL.DEVICE",)), ("KEY VALUE pairs", "MODEL.DEVICE")
    ),
    # 3. the video json
    "json not json": Case(lambda c: c.run(data=c.write("valid.json", '{"videos": [')), ("{tmp}/valid.json", "not valid JSON")),
    "json not utf8": Case(
        lambda c: c.run(data=c.write("valid.json", b'{"videos": "\xff\xfe"}')), ("{tmp}/valid.json", "not UTF-8 text (byte 0xff at offset 12)")
    ),
    "json a list": Case(lambda c: c.run(data=c.write("valid.json", "[1, 2]")), ("{tmp}/valid.json", "got list")),
    "json no videos": _json_case(lambda gt: gt.pop("videos"), "missing field 'videos'"),
    "json empty video list": _json_case(lambda gt: gt.update(videos=[], annotations=[]), "has no videos"),
    "video without file_names": _json_case(lambda gt: _video(gt).pop("file_names"), "id 1", "missing field 'file_names'"),
    "video length disagrees": _json_case(lambda gt: _video(gt).update(length=5), "id 1", "3 entries but length is 5"),
    "video negative length": _json_case(lambda gt: _video(gt).update(length=-1), "id 1", "'length' must be >= 0"),
    "video NaN height": _json_case(lambda gt: _video(gt).update(height=float("nan")), "id 1", "'height' must be an integer"),
    "video string height": _json_case(lambda gt: _video(gt).update(height="64"), "id 1", "'height' must be an integer"),
    "video string id": _json_case(lambda gt: _video(gt).update(id="../evil"), "videos[0]", "'id' must be an integer"),
    "duplicate video id": _json_case(lambda gt: _video(gt, 1).update(id=1), "duplicate video id 1"),
    "segmentations too short": _json_case(
        lambda gt: _ann(gt)["segmentations"].pop(), "annotations[0] (id 1)", "'segmentations' has 2 entries", "3 frames"
    ),
    "duplicate annotation id": _json_case(lambda gt: _ann(gt, 1).update(id=1), "duplicate annotation id 1"),
    "annotation unknown video": _json_case(lambda gt: _ann(gt).update(video_id=99), "(id 1)", "video_id 99"),
    "annotation unknown category": _json_case(lambda gt: _ann(gt).update(category_id=42), "(id 1)", "category_id 42"),
    "annotation corrupt RLE counts": _json_case(
        lambda gt: _ann(gt)["segmentations"][0].update(counts="!!!!"), "(id 1)", "segmentations[0]", "corrupt 'counts'"
    ),
    "test without annotations": _json_case(lambda gt: gt.pop("annotations"), "no annotations", command="test"),
    # 4. frames
    "frame missing": _frames_case(lambda f, gt: _first_frame(f, gt).unlink(), "{tmp}/frames/fish001/00000.png", "not found"),
    "frame zero bytes": _frames_case(
        lambda f, gt: _first_frame(f, gt).write_bytes(b""), "{tmp}/frames/fish001/00000.png", "empty (0 bytes)"
    ),
    "frame random bytes": _frames_case(_random_jpg, "{tmp}/frames/fish001/00000.jpg", "cannot read frame header"),
    "frame sizes differ": _frames_case(_other_size_frame, "{tmp}/frames/fish001/00001.png", "80x48", "96x64"),
    "frame size vs json": _frames_case(_json_size_differs, "{tmp}/frames/fish001/00000.png", "96x64", "90x60"),
    "frame is a directory": _frames_case(_frame_is_directory, "{tmp}/frames/fish001/00000.png", "not a file"),
    "frame dangling symlink": _frames_case(_dangling_link, "{tmp}/frames/fish001/00000.png", "not found"),
    "frame symlink loop": _frames_case(_link_loop, "{tmp}/frames/fish001/00000.png", "Too many levels of symbolic links"),
    # 8. names that leave their folder
    "frame name with ..": _json_case(
        _set_first_name("../../valid.json"), "(id 1)", "file_names[0] '../../valid.json' leads outside its folder"
    ),
    "frame name absolute": _json_case(_set_first_name("/etc/hostname"), "(id 1)", "'/etc/hostname' is an absolute path"),
    # 6. evaluate
    "results unknown video": _evaluate_case(
        [{"video_id": 99, "category_id": 1, "score": 0.5, "segmentations": [None] * 3}],
        "{tmp}/results.json", "video_id 99 is not in the ground truth",
    ),
    "results a dict": _evaluate_case({"video_id": 1}, "{tmp}/results.json", "must be a JSON list"),
    "results empty": _evaluate_case([], "{tmp}/results.json", "empty"),
    "results not json": _evaluate_case(b"[{", "{tmp}/results.json", "not valid JSON"),
    "evaluate unlabelled gt": _evaluate_case(
        [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [None] * 3}],
        "{tmp}/gt.json", "no 'annotations'", gt=lambda g: g.pop("annotations"),
    ),
    # 7. the run directory
    "out under a file": Case(
        lambda c: c.run(out=c.write("a_file", "x") / "run"),
        ("{tmp}/a_file/run", "{tmp}/a_file is not a directory"),
    ),
    "out is a file": Case(
        lambda c: c.run(out=c.write("a_file", "x")),
        ("{tmp}/a_file", "is not a directory"),
    ),
    # 9. flags
    "max-videos 0": Case(lambda c: c.run(flags=("--max-videos", "0")), ("--max-videos", "positive integer")),
    "max-videos negative": Case(lambda c: c.run(flags=("--max-videos", "-2")), ("--max-videos", "-2")),
    "data is a directory": Case(lambda c: c.run(data=c.data), ("{data}", "is a directory, expected a file")),
    "frames is a file": Case(lambda c: c.run(frames=c.data / "valid.json"), ("{data}/valid.json", "expected a directory")),
    "data without frames": Case(
        lambda c: ["predict", "--data", str(c.data / "valid.json"), "--out", str(c.out), *SMALL], ("--data and --frames",)
    ),
    # 8. analyze
    "analyze artifact path ..": _analyze_case(
        lambda run: _tamper_manifest(run, "../../../outside.safetensors"), "manifest.json", "leads outside its folder"
    ),
    "analyze artifact path absolute": _analyze_case(
        lambda run: _tamper_manifest(run, "/etc/hostname"), "manifest.json", "is an absolute path"
    ),
    "analyze video id ..": _analyze_case(_tamper_video_id, "video id '../../evil'", "inside the run directory"),
    "analyze not a run": Case(lambda c: ["analyze", str(c.data)], ("{data}/inference/results_temporal.json", "missing")),
    "analyze keep below drop": Case(lambda c: ["analyze", str(c.data), "--keep", "0.4"], ("--drop 0.5 / --keep 0.4",)),
    "analyze alpha out of range": Case(lambda c: ["analyze", str(c.data), "--alpha", "2"], ("--alpha 2.0", "0 < alpha < 1")),
}


# ---------------------------------------------------------------------------------- checks
def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (checked: status, one line, the prefix, no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert ERROR.match(lines[0]), lines[0]
    assert proc.returncode == 2, (proc.returncode, lines[0])
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, data_set, tmp_path, request):
    case = CASES[name]
    ctx = Ctx(data_set, tmp_path, request.getfixturevalue)
    argv = case.build(ctx)
    before = sorted(tmp_path.rglob("*"))
    line = error_line(run_cli(argv))
    for part in case.expect:
        assert part.format(tmp=tmp_path, data=data_set) in line, line
    assert not ctx.out.exists(), f"{name}: the run directory was created"
    assert sorted(tmp_path.rglob("*")) == before, f"{name}: files were written"


def _read_only_mount_works(folder: Path) -> str | None:
    """None when a read-only bind mount can be made in a user namespace here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"mount --bind -o ro {folder} {folder}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return None if proc.returncode == 0 else f"no read-only bind mount in a user namespace: {proc.stderr.strip()[:200]}"


def test_read_only_run_directory(data_set, tmp_path):
    """--out on a read-only file system (a read-only bind mount in a private mount namespace)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    reason = _read_only_mount_works(folder)
    if reason:
        pytest.skip(reason)
    cli = ["-m", "dvis_attn_pl", "predict", *data_args(data_set), "--out", str(folder / "run"), *SMALL]
    script = f'mount --bind -o ro "{folder}" "{folder}" && exec "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, sys.executable, *cli],
        capture_output=True, text=True, timeout=120, env=cli_env(), cwd=CONFIGS.parent,
    )  # fmt: skip
    line = error_line(proc)
    assert f"{folder}/run" in line and "read-only file system" in line, line
    assert not (folder / "run").exists()


def test_frame_that_fails_only_when_decoded(data_set, tmp_path):
    """A JPEG whose header is fine but whose data is cut: found while running, named, no results."""
    ctx = Ctx(data_set, tmp_path, lambda name: None)
    frames, gt = ctx.frames(), ctx.gt
    first = _first_frame(frames, gt)
    jpg = first.with_suffix(".jpg")
    Image.open(first).convert("RGB").save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[:1500])  # the header is whole, the pixels are not
    _video(gt)["file_names"][0] = str(jpg.relative_to(frames))
    proc = run_cli(ctx.run("predict", ctx.write("valid.json", gt), frames))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ERROR.match(line)]
    assert len(errors) == 1 and proc.stderr.strip().endswith(errors[0]), proc.stderr[-3000:]
    assert str(jpg) in errors[0] and "cannot decode frame" in errors[0], errors[0]
    assert not any((ctx.out / "inference" / name).exists() for name in RESULT_FILES)


# ---------------------------------------------------------------------------------- what must work
def _with_edge_videos(data: Path, folder: Path) -> Path:
    """The data set's json plus an empty video (id 10) and a one-frame video (id 11, one fish)."""
    gt = json.loads((data / "valid.json").read_text())
    first = gt["videos"][0]
    gt["videos"] += [
        {**first, "id": 10, "length": 0, "file_names": []},
        {**first, "id": 11, "length": 1, "file_names": first["file_names"][:1]},
    ]
    ann = copy.deepcopy(gt["annotations"][0])
    ann.update(
        id=100, video_id=11, segmentations=ann["segmentations"][:1], areas=ann["areas"][:1], bboxes=ann["bboxes"][:1]
    )
    gt["annotations"].append(ann)
    path = folder / "edge.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.fixture(scope="module")
def edge_runs(data_set, tiny_state, tmp_path_factory) -> dict[str, Path]:
    """``test`` on the set with an empty and a one-frame video: offline with a trusted full-pickle
    checkpoint and temporal capture, and online (random weights, no capture)."""
    base = tmp_path_factory.mktemp("edge")
    data = _with_edge_videos(data_set, base)
    ckpt = trusted_checkpoint(tiny_state, base / "trusted.pth")
    flags = ["--data", str(data), "--frames", str(data_set / "JPEGImages")]
    runs = {"offline": base / "offline", "online": base / "online", "json": data}
    offline = run_cli(
        ["test", *flags, "--ckpt", str(ckpt), "--model-config", "tiny_cpu", "--trust-checkpoint",
         "--out", str(runs["offline"]), *SMALL]
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr[-3000:]
    online = run_cli(
        ["test", *flags, "--out", str(runs["online"]), "--capture", "none", "--random-weights", *SMALL, *ONLINE]
    )
    assert online.returncode == 0, online.stderr[-3000:]
    return runs


@pytest.mark.parametrize("kind", ["offline", "online"])
def test_empty_and_one_frame_videos_run(edge_runs, kind):
    """The empty video has a result part and dimensions but no prediction; the metric ran."""
    inference = edge_runs[kind] / "inference"
    part = json.loads((inference / "parts" / "10.json").read_text())
    assert part["num_frames"] == 0 and part["records"] == [] and part["temporal"] == []
    dims = json.loads((inference / "image_dimensions.json").read_text())
    assert dims["10"] == {"original": [64, 96], "num_frames": 0} and dims["11"]["num_frames"] == 1
    results = json.loads((inference / "results.json").read_text())
    assert 10 not in {r["video_id"] for r in results}
    assert {len(r["segmentations"]) for r in results if r["video_id"] == 11} == {1}
    metrics = json.loads((inference / "metrics.json").read_text())
    assert 0.0 <= metrics["ytvis"]["AP"] <= 1.0
    config = (edge_runs[kind] / "config.yaml").read_text()
    assert f"DVIS_DAQ_{kind}" in config


def test_trusted_checkpoint_was_loaded_and_empty_video_captured(edge_runs):
    run = json.loads((edge_runs["offline"] / "run.json").read_text())
    assert run.get("random_weights") is False, run
    manifest = json.loads((edge_runs["offline"] / "attention_maps" / "manifest.json").read_text())
    assert manifest["videos"]["10"]["num_frames"] == 0 and manifest["videos"]["10"]["kinds"] == []
    assert 10 in manifest["complete_videos"]


def test_evaluate_a_ground_truth_with_an_empty_video(edge_runs):
    proc = run_cli(["evaluate", "--gt", str(edge_runs["json"]), "--json", "--results",
                    str(edge_runs["online"] / "inference" / "results.json")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout)
    metrics = json.loads((edge_runs["online"] / "inference" / "metrics.json").read_text())
    assert stats["AP"] == pytest.approx(metrics["ytvis"]["AP"])


def test_frame_headers_are_checked_once_per_node(data_set, tmp_path, monkeypatch):
    """A node's later processes (LOCAL_RANK > 0, started by the first after its checks) skip the
    per-frame checks; the first process of a node runs them."""
    from dvis_attn_pl.config import config_path, load_config
    from dvis_attn_pl.run.preflight import check_inputs, first_process_of_node

    frames = Path(shutil.copytree(data_set / "JPEGImages", tmp_path / "frames"))
    first = sorted(frames.rglob("*.png"))[0]
    first.unlink()
    cfg = load_config(config_path("tiny_cpu"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not first_process_of_node()
    check_inputs("predict", data_set / "valid.json", frames, cfg, None, frames=first_process_of_node())
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="frame file not found"):
        check_inputs("predict", data_set / "valid.json", frames, cfg, None, frames=first_process_of_node())
