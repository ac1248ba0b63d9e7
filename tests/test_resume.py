"""Interrupted runs: killed with SIGKILL and started again with the same command, a run skips the
videos it completed and ends with the same bytes as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvis_attn_pl.data.synthetic import write_synthetic_dataset
from tests.fault_injection import command as fault_command

SMALL = ["INPUT.MIN_SIZE_TEST", "64"]
NUM_VIDEOS = 5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def video_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "set"
    return write_synthetic_dataset(root, num_videos=NUM_VIDEOS, height=64, width=96, min_frames=4, max_frames=9)


def command(video_set: Path, out: Path, *extra: str, fault: bool = False) -> list[str]:
    """The ``test`` command; with ``fault``, through the test-only fault hook (tests/fault_injection.py)."""
    return [
        *(fault_command() if fault else [sys.executable, "-m", "dvis_attn_pl"]), "test",
        "--data", str(video_set / "valid.json"), "--frames", str(video_set / "JPEGImages"),
        "--out", str(out), "--capture", "all", *extra, *SMALL,
    ]  # fmt: skip


def environment(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("DVIS_ATTN_PL_RUN_DIR", None)
    return env


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=environment(**env), cwd=ROOT)


def outputs(run_dir: Path) -> dict[str, str]:
    """sha256 of every result, metric and attention file (TensorBoard events and run.json excluded)."""
    files = {}
    for sub in ("inference", "attention_maps"):
        for path in sorted((run_dir / sub).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def parts_done(run_dir: Path) -> int:
    return len(list((run_dir / "attention_maps").glob("video_*/manifest.json")))


@pytest.fixture(scope="module")
def reference(video_set, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = run(command(video_set, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = outputs(out)
    assert "inference/metrics.json" in files and "attention_maps/manifest.json" in files
    assert sum(1 for f in files if f.endswith(".safetensors")) >= NUM_VIDEOS
    return files


def check_resumed(video_set: Path, out: Path, reference: dict[str, str], **env: str) -> str:
    """Rerun the command on ``out``; it must complete and match ``reference`` byte for byte."""
    leftovers = [p for p in out.rglob(".*.tmp")]
    proc = run(command(video_set, out), **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(out.rglob(".*.tmp")), "temporary files left after the resumed run"
    assert all(not p.exists() for p in leftovers)
    got = outputs(out)
    assert set(got) == set(reference)
    assert [f for f in reference if got[f] != reference[f]] == []
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    return proc.stderr


def test_kill_at_a_chosen_video_then_resume(video_set, tmp_path, reference):
    out = tmp_path / "run"
    proc = run(command(video_set, out, fault=True), DVIS_ATTN_PL_FAULT="kill:0:3")
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert not (out / "inference" / "metrics.json").exists()
    assert parts_done(out) == 3 or parts_done(out) == 2  # the writer thread may not have finished video 2
    stderr = check_resumed(video_set, out, reference)
    assert f"of {NUM_VIDEOS} videos already complete" in stderr


@pytest.mark.parametrize("seed", [pytest.param(s, marks=[] if s == 3 else pytest.mark.slow) for s in range(12)])
def test_kill_at_a_random_moment_then_resume(video_set, tmp_path, reference, seed):
    """SIGKILL once ``seed % 6`` videos are complete (5: during the final merge and metric) plus a
    random delay; the rerun completes with the reference bytes. 12 seeds: each point twice."""
    rng = random.Random(seed)
    want_parts = seed % (NUM_VIDEOS + 1)
    out = tmp_path / "run"
    proc = subprocess.Popen(command(video_set, out), env=environment(), cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while parts_done(out) < want_parts and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.8))  # somewhere inside the next video (or its writes)
    killed_at = parts_done(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    print(f"\nseed {seed}: killed with {killed_at} of {NUM_VIDEOS} videos complete (exit {proc.returncode})")
    check_resumed(video_set, out, reference)


def test_ddp_run_killed_then_resumed_on_one_process(video_set, tmp_path, reference):
    out = tmp_path / "run"
    args = command(video_set, out, "--devices", "2", "--accelerator", "cpu", fault=True)
    # rank 0 (the launcher) is killed at its third video; rank 1 has finished its two by then or
    # fails when its peer disappears. Whatever is left of the process group is killed too.
    proc = subprocess.Popen(
        args, env=environment(DVIS_ATTN_PL_FAULT="kill:0:2"), cwd=ROOT, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert not (out / "inference" / "metrics.json").exists()
    stderr = check_resumed(video_set, out, reference)
    assert "videos already complete" in stderr


def test_a_complete_run_started_again_changes_nothing(video_set, tmp_path, reference):
    out = tmp_path / "run"
    assert run(command(video_set, out)).returncode == 0
    assert outputs(out) == reference  # two fresh CPU runs: byte-identical results and attention
    stderr = check_resumed(video_set, out, reference)
    assert f"{NUM_VIDEOS} of {NUM_VIDEOS} videos already complete" in stderr


def test_another_run_in_the_same_directory_is_refused(video_set, tmp_path):
    out = tmp_path / "run"
    first = run(command(video_set, out, "--max-videos", "2"))
    assert first.returncode == 0, first.stderr[-2000:]
    before = outputs(out)
    for extra in (["--max-videos", "3"], ["--max-videos", "2", "--capture", "none"]):
        proc = run([*command(video_set, out)[:-2], *extra, *SMALL])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert str(out) in lines[0] and "different run" in lines[0]
    proc = run([*command(video_set, out, "--max-videos", "2")[:-2], "INPUT.MIN_SIZE_TEST", "96"])
    assert proc.returncode == 2 and "config_sha256" in proc.stderr
    assert outputs(out) == before


def test_results_without_run_file_are_not_resumed(video_set, tmp_path):
    out = tmp_path / "run"
    (out / "inference" / "parts").mkdir(parents=True)
    (out / "inference" / "parts" / "1.json").write_text("{}")
    proc = run(command(video_set, out))
    assert proc.returncode == 2 and "cannot be resumed" in proc.stderr
    assert (out / "inference" / "parts" / "1.json").read_text() == "{}"


def test_fewer_videos_than_processes(video_set, tmp_path):
    out = tmp_path / "run"
    proc = run(command(video_set, out, "--max-videos", "1", "--devices", "2", "--accelerator", "cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "inference" / "results.json").read_text())
    assert {r["video_id"] for r in results} <= {1}
    assert json.loads((out / "inference" / "metrics.json").read_text())["num_videos"] == 1
