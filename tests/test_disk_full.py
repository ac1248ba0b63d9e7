"""Disk full during a run: one clear error line, a consistent run directory, and a rerun that completes.

The run directory lives on a small tmpfs mounted in a private user + mount namespace
(``unshare --user --map-root-user --mount``), so no privileges are needed and nothing outside
changes. A filler file takes most of the space; the run fills the rest mid-run. The checks on the
run directory happen inside the namespace (the tmpfs disappears with it) and come back as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["INPUT.MIN_SIZE_TEST", "64"]

# Runs inside the namespace on the run directory: every file complete, nothing temporary.
CHECK_RUN = r'''
import json, sys
from pathlib import Path

root = Path(sys.argv[1])
report = {"files": 0, "tmp": [], "empty": [], "broken": []}
for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
    report["files"] += 1
    rel = str(path.relative_to(root))
    if path.name.endswith(".tmp"):
        report["tmp"].append(rel)
    elif path.stat().st_size == 0:
        report["empty"].append(rel)
    else:
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                from safetensors.torch import load_file
                load_file(str(path))
            elif path.suffix == ".yaml":
                import yaml
                yaml.safe_load(path.read_text())
        except Exception as exc:
            report["broken"].append(f"{rel}: {type(exc).__name__}: {exc}"[:300])
print(json.dumps(report))
'''

# $1 tmpfs size (KiB), $2 filler (KiB), $3 mount point, $4 results folder; the run command follows.
NAMESPACE_SCRIPT = r'''
set -u
SIZE=$1; FILL=$2; MNT=$3; RES=$4; shift 4
mount -t tmpfs -o size=${SIZE}k tmpfs "$MNT" || { echo mount > "$RES/failed"; exit 0; }
dd if=/dev/zero of="$MNT/filler" bs=1k count="$FILL" 2>/dev/null
"$@" > "$RES/first.out" 2> "$RES/first.err"; echo $? > "$RES/first.rc"
"$PY" "$RES/check_run.py" "$MNT/run" > "$RES/first.json"
rm "$MNT/filler"
"$@" > "$RES/second.out" 2> "$RES/second.err"; echo $? > "$RES/second.rc"
"$PY" "$RES/check_run.py" "$MNT/run" > "$RES/second.json"
'''


def _namespaces_work(tmp: Path) -> str | None:
    """None when a private tmpfs can be mounted here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = tmp / "probe"
    probe.mkdir()
    try:
        proc = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if proc.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="module")
def small_set(small_set, tmp_path_factory) -> Path:
    """The session's synthetic set (tests/conftest.py), once mount namespaces are known to work here."""
    reason = _namespaces_work(tmp_path_factory.mktemp("diskfull"))
    if reason:
        pytest.skip(reason)
    return small_set


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PY": sys.executable}
    env.pop("DVIS_ATTN_PL_RUN_DIR", None)
    env.pop("DVIS_ATTN_PL_FAULT", None)
    return env


def _command(data: Path, out: Path, capture: str) -> list[str]:
    return [
        sys.executable, "-m", "dvis_attn_pl", "test", "--data", str(data / "valid.json"),
        "--frames", str(data / "JPEGImages"), "--out", str(out), "--capture", capture,
        "--max-videos", "3", "--accelerator", "cpu", "--devices", "1", *SMALL,
    ]  # fmt: skip


def _disk_usage_kib(root: Path) -> int:
    return sum(p.stat().st_blocks for p in root.rglob("*") if p.is_file()) // 2


def _run_on_full_disk(small_set: Path, tmp_path: Path, capture: str, free_fraction: float) -> dict:
    """Reference run on the normal disk (for the size), then first run + rerun on a tmpfs that
    has ``free_fraction`` of that size free until the filler is removed."""
    reference = tmp_path / "reference"
    proc = subprocess.run(_command(small_set, reference, capture), env=_env(), cwd=REPO, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    need = _disk_usage_kib(reference)
    free = max(int(need * free_fraction), 16)
    size = need * 2 + 1024  # room for the rerun once the filler is gone
    mnt, res = tmp_path / "mnt", tmp_path / "results"
    mnt.mkdir()
    res.mkdir()
    (res / "check_run.py").write_text(CHECK_RUN)
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", NAMESPACE_SCRIPT, "sh",
         str(size), str(size - free), str(mnt), str(res), *_command(small_set, mnt / "run", capture)],
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and not (res / "failed").exists(), proc.stderr[-2000:]
    text = {name: (res / name).read_text() for name in ("first.rc", "first.err", "second.rc", "second.err")}
    return {
        "mnt": mnt,
        "first_rc": int(text["first.rc"]),
        "first_err": text["first.err"].replace("\r", "\n"),
        "first": json.loads((res / "first.json").read_text()),
        "second_rc": int(text["second.rc"]),
        "second_err": text["second.err"].replace("\r", "\n"),
        "second": json.loads((res / "second.json").read_text()),
    }


def _assert_consistent(report: dict, when: str) -> None:
    for key in ("tmp", "empty", "broken"):
        assert report[key] == [], f"{when}: {key}: {report[key]}"


def _check(result: dict) -> str:
    err = result["first_err"]
    assert result["first_rc"] == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    assert line.startswith(f"dvis_attn_pl: error: {result['mnt'] / 'run'}/"), line
    assert line.endswith(": No space left on device (ENOSPC)"), line
    _assert_consistent(result["first"], "after the failed run")
    assert result["second_rc"] == 0, result["second_err"][-3000:]
    _assert_consistent(result["second"], "after the rerun")
    assert result["second"]["files"] > result["first"]["files"]
    return line


def test_disk_full_in_the_attention_writer(small_set, tmp_path):
    """--capture all: the attention files fill the disk; the writer thread's error names the file."""
    line = _check(_run_on_full_disk(small_set, tmp_path, "all", free_fraction=0.4))
    assert "/attention_maps/" in line


@pytest.mark.slow
def test_disk_full_in_the_result_parts(small_set, tmp_path):
    """--capture none: the per-video result parts fill the disk."""
    line = _check(_run_on_full_disk(small_set, tmp_path, "none", free_fraction=0.1))
    assert "/inference/" in line


@pytest.mark.slow
@pytest.mark.parametrize("free_fraction", [0.25, 0.5, 0.75, 0.9, 0.97])
def test_disk_full_at_any_point(small_set, tmp_path, free_fraction):
    """--capture temporal with less free space than the whole run needs: wherever the disk fills
    (attention, result parts, final merge, metrics, TensorBoard), the same guarantees hold."""
    line = _check(_run_on_full_disk(small_set, tmp_path, "temporal", free_fraction=free_fraction))
    print(f"\nfree {free_fraction:.0%} of the run's size: {line}")


BOARD_SCRIPT = r'''
import sys
from dvis_attn_pl.viz.tensorboard import RunBoard

try:
    with RunBoard(sys.argv[1]) as board:
        board.add_markdown("summary/big", "x" * 200_000)
except OSError as exc:
    print(exc.errno)
'''


def test_tensorboard_leaves_no_incomplete_event_file(tmp_path):
    """A TensorBoard board whose events cannot be written leaves no incomplete event file behind."""
    reason = _namespaces_work(tmp_path)
    if reason:
        pytest.skip(reason)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f'mount -t tmpfs -o size=64k tmpfs {mnt} && "$PY" -c "$BOARD" {mnt}/board && ls -l {mnt}/board'
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env={**_env(), "BOARD": BOARD_SCRIPT}, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "28", proc.stdout  # ENOSPC reached the caller
    assert lines[1:] == ["total 0"], proc.stdout  # and its incomplete events file is removed
