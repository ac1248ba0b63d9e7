"""The second bad-input catalogue (issue 18): one verdict for one file, options checked before the
first byte is written, user files never touched, corrupt masks never scored.

Refused cases run the real command line, as ``tests/test_bad_inputs.py`` does: exactly one stderr
line ``dvis_attn_pl: error: ...`` naming the file (or option, key, video) and the problem, exit
status 2, no traceback, no run directory and no file written. Then what must work: unusual but
valid inputs, a half-written result part, temporary files, and pre-existing user folders.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.cli_run import REPO, SMALL, cli_env, run_cli
from tests.test_bad_inputs import (
    Case,
    Ctx,
    _ann,
    _first_frame,
    _json_case,
    _save,
    _state,
    _video,
    error_line,
)

TINY = ("--model-config", "tiny_cpu")


# ---------------------------------------------------------------------------------- json edits
def _drop(key: str) -> Callable[[dict], None]:
    """Remove ``key`` from every annotation."""
    return lambda gt: [a.pop(key, None) for a in gt["annotations"]]


def _float_ids(gt: dict) -> None:
    _video(gt)["id"] = float(_video(gt)["id"])
    for a in gt["annotations"]:
        if a["video_id"] == 1:
            a["video_id"] = 1.0


def _two_point_polygon(gt: dict) -> None:
    _ann(gt)["segmentations"][0] = [[10.0, 10.0, 20.0, 20.0]]


def _short_uncompressed_rle(gt: dict) -> None:
    _ann(gt)["segmentations"][0] = {"size": [64, 96], "counts": [100, 20, 30]}  # 150 of 6144 pixels


def _ids_from_zero(gt: dict) -> None:
    for i, a in enumerate(gt["annotations"]):
        a["id"] = i


def _huge_video_id(gt: dict) -> None:
    _video(gt)["id"] = 2**70
    for a in gt["annotations"]:
        if a["video_id"] == 1:
            a["video_id"] = 2**70


def _bad_garbage_rle(gt: dict) -> None:
    _ann(gt)["segmentations"][1]["counts"] = "!!!!"


def _results_of(gt: dict) -> list[dict]:
    """Perfect results for ``gt``: each ground-truth track predicted with score 0.9."""
    return [
        {"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
         "segmentations": list(a["segmentations"])}
        for a in gt["annotations"]
    ]  # fmt: skip


def _evaluate(mutate_results: Callable[[list], None] | None = None, mutate_gt: Callable[[dict], None] | None = None):
    """``evaluate`` of perfect results, with the results or the ground truth damaged."""

    def build(ctx: Ctx) -> list[str]:
        gt = ctx.gt
        results = _results_of(gt)
        if mutate_gt:
            mutate_gt(gt)
        if mutate_results:
            mutate_results(results)
        return ["evaluate", "--gt", str(ctx.write("gt.json", gt)), "--results", str(ctx.write("results.json", results))]

    return build


def _corrupt_counts(text: str) -> Callable[[list], None]:
    def mutate(results: list) -> None:
        results[0]["segmentations"][1] = {"size": [64, 96], "counts": text}

    return mutate


def _other_mask_size_counts(results: list) -> None:
    """A well-formed compressed RLE of a 64x97 mask where the video is 64x96 (runs do not add up)."""
    rle = mask_utils.encode(np.asfortranarray(np.zeros((64, 97), np.uint8)))
    results[0]["segmentations"][0] = {"size": [64, 96], "counts": rle["counts"].decode()}


# ---------------------------------------------------------------------------------- frames
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(frames: Path, gt: dict) -> None:
    """A tiny PNG whose header claims 20000 x 20000 pixels."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    _first_frame(frames, gt).write_bytes(png + _png_chunk(b"IEND", b""))


def _frames_case(damage: Callable[[Path, dict], None], command: str, *expect: str) -> Case:
    def build(ctx: Ctx) -> list[str]:
        frames, gt = ctx.frames(), ctx.gt
        damage(frames, gt)
        return ctx.run(command, ctx.write("valid.json", gt), frames)

    return Case(build, expect)


# ---------------------------------------------------------------------------------- checkpoints
def _changed_state(ctx: Ctx, change: Callable[[dict], None], name: str) -> Path:
    state = _state(ctx)
    change(state)
    return _save(ctx, name, {"model": state})


def _first_weight(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)


def _nan_weight(state: dict) -> None:
    key = _first_weight(state)
    state[key] = state[key].clone().fill_(float("nan"))


def _inf_weight(state: dict) -> None:
    key = _first_weight(state)
    state[key] = state[key].clone()
    state[key].view(-1)[3] = float("inf")


def _integer_weight(state: dict) -> None:
    key = _first_weight(state)
    state[key] = state[key].round().long()


def _ckpt(change: Callable[[dict], None], *expect: str, via_weights: bool = False) -> Case:
    """``predict --ckpt FILE`` (or the trailing override ``MODEL.WEIGHTS FILE``) with a changed state."""

    def build(ctx: Ctx) -> list[str]:
        path = str(_changed_state(ctx, change, "model.pth"))
        if via_weights:
            return ctx.run(flags=TINY, opts=("MODEL.WEIGHTS", path))
        return ctx.run(flags=("--ckpt", path, *TINY))

    return Case(build, ("{tmp}/model.pth", *expect))


def _opts(*opts: str, expect: tuple[str, ...]) -> Case:
    return Case(lambda c: c.run(opts=opts), expect)


def _flags(*flags: str, expect: tuple[str, ...]) -> Case:
    return Case(lambda c: c.run(flags=flags), expect)


def _user_folder(files: dict[str, str]) -> Case:
    """``--out`` an existing folder of the user's holding ``files``."""

    def build(ctx: Ctx) -> list[str]:
        for name, text in files.items():
            ctx.write(f"run/{name}", text)
        return ctx.run()

    return Case(build, ("{tmp}/run", "not a run directory"))


# ---------------------------------------------------------------------------------- the catalogue
CASES: dict[str, Case] = {
    # 1. one strictness: test refuses up front what its metric would refuse after the run
    "test: annotations without areas": _json_case(_drop("areas"), "missing 'areas'", command="test"),
    "test: video id 1.0": _json_case(_float_ids, "videos[0]", "must be an integer, got 1.0", command="test"),
    "predict: video id 1.0": _json_case(_float_ids, "must be an integer, got 1.0"),
    "test: annotation id 2.0": _json_case(
        lambda gt: _ann(gt).__setitem__("id", 2.0), "annotations[0]", "must be an integer", command="test"
    ),
    "test: category id 5.0": _json_case(
        lambda gt: gt["categories"][4].__setitem__("id", 5.0), "categories[4]", "must be an integer", command="test"
    ),
    "test: height 64.0": _json_case(
        lambda gt: _video(gt).__setitem__("height", 64.0), "videos[0]", "'height' must be an integer", command="test"
    ),
    "test: two-point polygon": _json_case(_two_point_polygon, "frame 0", "polygon", command="test"),
    "test: polygon of strings": _json_case(
        lambda gt: _ann(gt)["segmentations"].__setitem__(0, [["1", "2", "3", "4", "5", "6"]]), "polygon",
        command="test",
    ),
    "test: uncompressed RLE not adding up": _json_case(
        _short_uncompressed_rle, "frame 0", "summing to 64*96", command="test"
    ),
    "test: uncompressed RLE negative run": _json_case(
        lambda gt: _ann(gt)["segmentations"].__setitem__(0, {"size": [64, 96], "counts": [6200, -56]}),
        "frame 0", command="test",
    ),
    "test: annotation ids from 0": _json_case(_ids_from_zero, "annotation id 0", command="test"),
    "test: areas of strings": _json_case(
        lambda gt: _ann(gt).__setitem__("areas", ["a", "b", "c"]), "areas[0]", command="test"
    ),
    "test: iscrowd -1": _json_case(lambda gt: _ann(gt).__setitem__("iscrowd", -1), "iscrowd", command="test"),
    # 8. ids that do not fit in 64 bits
    "predict: video id 2**70": _json_case(_huge_video_id, "videos[0]", "64-bit"),
    "test: annotation id 2**70": _json_case(
        lambda gt: _ann(gt).__setitem__("id", 2**70), "annotations[0]", "64-bit", command="test"
    ),
    "predict: category id -2**70": _json_case(
        lambda gt: gt["categories"][0].__setitem__("id", -(2**70)), "categories[0]", "64-bit"
    ),
    # 3. frames
    "predict: PNG header of 20000x20000": _frames_case(
        _bomb_png, "predict", "{tmp}/frames/fish001/00000.png", "decompression bomb"
    ),
    "test: PNG header of 20000x20000": _frames_case(_bomb_png, "test", "{tmp}/frames/fish001/00000.png", "pixels"),
    # 4. evaluate refuses the corrupt masks predict refuses
    "evaluate: results RLE of bad characters": Case(
        _evaluate(_corrupt_counts("!!!!")), ("{tmp}/results.json", "results[0] frame 1", "not a valid compressed RLE")
    ),
    "evaluate: results RLE cut short": Case(
        _evaluate(_corrupt_counts("T_2230g10WN0j1")), ("{tmp}/results.json", "results[0] frame 1", "compressed RLE")
    ),
    "evaluate: results RLE of another mask size": Case(
        _evaluate(_other_mask_size_counts), ("{tmp}/results.json", "results[0] frame 0", "6144-pixel")
    ),
    "evaluate: ground-truth RLE corrupt": Case(
        _evaluate(mutate_gt=_bad_garbage_rle), ("{tmp}/gt.json", "annotation id 1", "frame 1", "compressed RLE")
    ),
    "evaluate: ground-truth uncompressed RLE not adding up": Case(
        _evaluate(mutate_gt=_short_uncompressed_rle), ("{tmp}/gt.json", "summing to 64*96")
    ),
    "evaluate: ground-truth video id 2**70": Case(
        _evaluate(mutate_gt=_huge_video_id), ("{tmp}/gt.json", "videos[0]", "64-bit")
    ),
    # 5. a folder of the user's is not a run directory
    "--out holds a config.yaml of the user's": _user_folder({"config.yaml": "mine: 1\n"}),
    "--out holds notes": _user_folder({"notes.txt": "my notes"}),
    "--out holds only a hidden file": _user_folder({".keep": ""}),
    "--out holds an empty folder": Case(
        lambda c: (c.tmp.joinpath("run", "sub").mkdir(parents=True), c.run())[1], ("{tmp}/run", "not a run directory")
    ),
    "--out . in a project": Case(
        lambda c: (c.write("run/setup.py", ""), c.run(out=c.tmp / "run" / "."))[1], ("not a run directory",)
    ),
    # 6. options and config values, before anything is written
    "--precision 8-bit": _flags("--precision", "8-bit", expect=("--precision", "8-bit")),
    "--precision 64-true": _flags("--precision", "64-true", expect=("--precision", "64-true")),
    "--precision 16-true": _flags("--precision", "16-true", expect=("--precision", "16-true")),
    "--devices 0": _flags("--devices", "0", expect=("--devices", "0")),
    "--devices -3": _flags("--devices", "-3", expect=("--devices", "-3")),
    "--devices two": _flags("--devices", "two", expect=("--devices", "two")),
    "--devices 0,1 on the cpu": _flags("--accelerator", "cpu", "--devices", "0,1", expect=("--devices 0,1",)),
    "--strategy bogus": _flags("--strategy", "bogus", expect=("--strategy bogus", "bogus")),
    "--accelerator abacus": _flags("--accelerator", "abacus", expect=("--accelerator abacus",)),
    "--num-nodes 2 without a launcher": _flags("--num-nodes", "2", expect=("--num-nodes 2", "launcher")),
    "negative query count": _opts("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "-3", expect=("NUM_OBJECT_QUERIES", ">= 1")),
    "zero query count": _opts("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "0", expect=("NUM_OBJECT_QUERIES",)),
    "heads do not divide the width": _opts("MODEL.MASK_FORMER.NHEADS", "7", expect=("NHEADS", "do not divide")),
    "zero heads": _opts("MODEL.MASK_FORMER.NHEADS", "0", expect=("NHEADS", ">= 1")),
    "two-value pixel mean": _opts("MODEL.PIXEL_MEAN", "[1.0, 2.0]", expect=("MODEL.PIXEL_MEAN", "3 numbers")),
    "four-value pixel std": _opts("MODEL.PIXEL_STD", "[1.0, 1.0, 1.0, 1.0]", expect=("MODEL.PIXEL_STD",)),
    "zero pixel std": _opts("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]", expect=("MODEL.PIXEL_STD", "> 0")),
    "negative test size": _opts("INPUT.MIN_SIZE_TEST", "-5", expect=("INPUT.MIN_SIZE_TEST", ">= 0")),
    "zero max size": _opts("INPUT.MAX_SIZE_TEST", "0", expect=("INPUT.MAX_SIZE_TEST",)),
    "window size 0": _opts("MODEL.MASK_FORMER.TEST.WINDOW_SIZE", "0", expect=("WINDOW_SIZE", ">= 1")),
    "negative class count": _opts("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "-1", expect=("NUM_CLASSES",)),
    "frame format XYZ": _opts("INPUT.FORMAT", "XYZ", expect=("INPUT.FORMAT", "RGB, BGR")),
    "tracker asks more new instances than queries": _opts(
        "MODEL.VIDEO_HEAD.NUM_NEW_INS", "20", expect=("tiny_fish.yaml", "NUM_NEW_INS (20)")
    ),
    "zero decoder layers": _opts("MODEL.MASK_FORMER.DEC_LAYERS", "0", expect=("DEC_LAYERS",)),
    # 7. checkpoints
    "checkpoint with a NaN weight": _ckpt(_nan_weight, "NaN or infinite", "entry '"),
    "checkpoint with an infinite weight": _ckpt(_inf_weight, "NaN or infinite"),
    "checkpoint with integer weights": _ckpt(_integer_weight, "torch.int64", "torch.float32"),
    "MODEL.WEIGHTS override is loaded": _ckpt(_nan_weight, "NaN or infinite", via_weights=True),
    "MODEL.WEIGHTS override of a missing file": Case(
        lambda c: c.run(flags=TINY, opts=("MODEL.WEIGHTS", str(c.tmp / "nope.pth"))), ("{tmp}/nope.pth", "no such file")
    ),
    "MODEL.WEIGHTS and another --ckpt": Case(
        lambda c: c.run(
            flags=("--ckpt", str(_save(c, "a.pth", _state(c))), *TINY), opts=("MODEL.WEIGHTS", str(c.tmp / "b.pth"))
        ),
        ("MODEL.WEIGHTS {tmp}/b.pth", "--ckpt {tmp}/a.pth", "different"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, data_set, tmp_path, request):
    case = CASES[name]
    ctx = Ctx(data_set, tmp_path, request.getfixturevalue)
    argv = case.build(ctx)
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    proc = run_cli(argv, timeout=120)  # --num-nodes 2 used to hang: a timeout fails the case
    line = error_line(proc)
    for part in case.expect:
        assert part.format(tmp=tmp_path, data=data_set) in line, line
    after = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    assert after == before, f"{name}: files were written or changed"
    if name.startswith("--out"):
        assert (ctx.out.is_dir() and any(ctx.out.iterdir())), "the user's folder must survive"
    else:
        assert not ctx.out.exists(), f"{name}: the run directory was created"


def test_gpu_accelerator_without_a_gpu_is_one_line(data_set, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ctx = Ctx(data_set, tmp_path, lambda name: None)
    line = error_line(run_cli(ctx.run(flags=("--accelerator", "gpu")), timeout=120))
    assert "--accelerator gpu" in line, line
    assert not ctx.out.exists()


# ---------------------------------------------------------------------------------- what must work
def _unusual_but_valid(data: Path, folder: Path) -> Path:
    """The data set's json with a UTF-8 byte-order mark, no 'iscrowd' and no video 'length'."""
    gt = json.loads((data / "valid.json").read_text())
    for a in gt["annotations"]:
        a.pop("iscrowd")
    for v in gt["videos"]:
        v.pop("length")
    path = folder / "unusual.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(gt).encode())
    return path


def test_unusual_json_through_a_pipe_is_scored(data_set, tmp_path):
    """`test` with a byte-order mark, no iscrowd, no length, given as a pipe (read once): one verdict,
    and the run ends with metrics; started again with the same command it is already complete."""
    source = _unusual_but_valid(data_set, tmp_path)
    out = tmp_path / "run"
    command = (
        f'exec "$0" -m dvis_attn_pl test --data <(cat "{source}") --frames "{data_set / "JPEGImages"}" '
        f'--out "{out}" --capture none {" ".join(SMALL)}'
    )
    for _ in range(2):  # the second start finds the run complete
        proc = subprocess.run(
            ["bash", "-c", command, os.environ.get("PYTHON", shutil.which("python3") or "python3")],
            capture_output=True, text=True, timeout=300, env=cli_env(), cwd=REPO,
        )  # fmt: skip
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    metrics = json.loads((out / "inference" / "metrics.json").read_text())
    assert set(metrics["ytvis"]) >= {"AP", "AP50"} and metrics["num_videos"] == 2
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert "resuming" in proc.stderr and "2 of 2 videos already complete" in proc.stderr, proc.stderr[-2000:]


def _unused_fields_damaged(data: Path, folder: Path) -> Path:
    """Annotations whose areas are strings, a flat polygon, boxes that are not boxes, ids from 0."""
    gt = json.loads((data / "valid.json").read_text())
    for i, a in enumerate(gt["annotations"]):
        a["id"] = i
    _ann(gt)["areas"] = ["a", "b", "c"]
    _ann(gt)["segmentations"][0] = [10, 10, 20, 10, 20, 20]
    _ann(gt, 1)["bboxes"] = [1, 2, 3]
    path = folder / "unused.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.fixture(scope="module")
def predict_run(data_set, tmp_path_factory) -> Path:
    """`predict` on a json whose annotation fields (unused by predict) are damaged."""
    folder = tmp_path_factory.mktemp("predict_unused")
    data = _unused_fields_damaged(data_set, folder)
    argv = ["predict", "--data", str(data), "--frames", str(data_set / "JPEGImages"), "--out", str(folder / "run"),
            "--capture", "none", *SMALL]  # fmt: skip
    proc = run_cli(argv)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return folder / "run"


def test_predict_ignores_annotation_fields_it_does_not_use(predict_run):
    results = json.loads((predict_run / "inference" / "results.json").read_text())
    assert {r["video_id"] for r in results} <= {1, 2}
    assert sorted(p.name for p in (predict_run / "inference" / "parts").iterdir()) == ["1.json", "2.json"]


def test_cut_part_is_redone_and_only_own_temporary_files_are_removed(predict_run, tmp_path):
    run = Path(shutil.copytree(predict_run, tmp_path / "run"))
    argv = json.loads((run / "run.json").read_text())["argv"]
    argv[argv.index("--out") + 1] = str(run)
    whole = {p.name: p.read_bytes() for p in (run / "inference").glob("*.json")}
    part = run / "inference" / "parts" / "2.json"
    part_bytes = part.read_bytes()
    part.write_bytes(part_bytes[: len(part_bytes) // 2])  # a copy or a disk cut it short
    own = run / "inference" / ".results.json.ab3_x9z0.dvis.tmp"
    own.write_text("left by a killed writer")
    user = [run / ".notes.tmp", run / "inference" / ".draft.tmp", run / "inference" / "parts" / ".x.abcdefgh.tmp"]
    for path in user:
        path.write_text("the user's")
    # the run was written with another --out: its fingerprint still matches (same inputs, same command)
    proc = run_cli(argv)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "1 of 2 videos already complete" in proc.stderr, proc.stderr[-2000:]
    assert part.read_bytes() == part_bytes, "the cut part was not redone"
    assert {p.name: p.read_bytes() for p in (run / "inference").glob("*.json")} == whole
    assert not own.exists(), "the tool's own temporary file was left"
    assert all(p.read_text() == "the user's" for p in user), "a file of the user's was removed"


# ---------------------------------------------------------------------------------- units
def test_sixteen_bit_frames_are_scaled_not_clipped(tmp_path):
    from dvis_attn_pl.data.frames import read_frame

    ramp = np.linspace(0, 65535, 64 * 96).reshape(64, 96).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    rgb = read_frame(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 96, 3)
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(rgb[:, :, 0].astype(np.float64) - expected).max() <= 1
    assert (rgb[:, :, 0] == rgb[:, :, 2]).all() and rgb.min() == 0 and rgb.max() == 255


@pytest.mark.parametrize("name", ["model.pth", "model.safetensors", "model.bin"])
def test_checkpoint_format_is_read_from_the_content(tmp_path, name, tiny_state):
    """A safetensors file and a torch file load whatever their extension."""
    import torch
    from safetensors.torch import save_file

    from dvis_attn_pl.model.checkpoint import read_checkpoint

    state = {k: v.contiguous() for k, v in tiny_state.items()}
    for writer in ("safetensors", "torch"):
        path = tmp_path / writer / name
        path.parent.mkdir()
        save_file(state, str(path)) if writer == "safetensors" else torch.save({"model": state}, path)
        loaded = read_checkpoint(path)[0]
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_only_the_tools_own_temporary_names_are_removed(tmp_path):
    from dvis_attn_pl.run.resume import remove_temporary_files
    from dvis_attn_pl.utils.io_utils import atomic_write_bytes, is_own_temporary

    own = [".results.json.k2j4h5g6.dvis.tmp", ".video_3.1234.0123456789ab.dvis.tmp.mp4"]
    theirs = [".notes.tmp", ".x.abcdefgh.tmp", "results.dvis.tmp", ".a.dvis.tmp", ".b.tmp.mp4"]
    for name in own + theirs:
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / name).write_text("x")
    assert [is_own_temporary(n) for n in own + theirs] == [True] * len(own) + [False] * len(theirs)
    assert remove_temporary_files(tmp_path) == len(own)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(theirs)
    seen = []
    real_replace = os.replace
    try:  # the name atomic_write_bytes really gives its temporary file is one of the tool's own
        os.replace = lambda src, dst: (seen.append(Path(src).name), real_replace(src, dst))[1]
        atomic_write_bytes(tmp_path / "out.json", b"{}")
    finally:
        os.replace = real_replace
    assert len(seen) == 1 and is_own_temporary(seen[0]), seen


def test_predict_of_a_pipe_reads_it_once(data_set, tmp_path):
    """The json is read once: the document and its sha256 come from the same bytes."""
    from dvis_attn_pl.data.ytvis_json import load_ytvis_json

    raw = (data_set / "valid.json").read_bytes()
    read, write = os.pipe()
    os.write(write, raw)
    os.close(write)
    try:
        data = load_ytvis_json(f"/dev/fd/{read}")
    finally:
        os.close(read)
    import hashlib

    assert data.sha256 == hashlib.sha256(raw).hexdigest() and data.document == json.loads(raw)
    assert [v.id for v in data.videos] == [1, 2]


def test_a_start_killed_before_run_json_leaves_a_folder_that_is_still_usable(tmp_path):
    """Only what a killed start itself leaves (the write probe, its own temporary files) is ignored
    when deciding whether --out is a user's folder."""
    from dvis_attn_pl.run.resume import PROBE_FILE, check_resumable
    from dvis_attn_pl.utils.errors import UserError

    (tmp_path / PROBE_FILE).write_text("")
    (tmp_path / ".run.json.abcdefgh.dvis.tmp").write_text("{")
    assert check_resumable(tmp_path, {"command": "predict"}) is False
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a run directory"):
        check_resumable(tmp_path, {"command": "predict"})


def test_config_rules_know_the_frame_formats_the_transform_knows():
    from dvis_attn_pl.config.loader import FRAME_FORMATS
    from dvis_attn_pl.data.transforms import SUPPORTED_FORMATS

    assert FRAME_FORMATS == SUPPORTED_FORMATS
