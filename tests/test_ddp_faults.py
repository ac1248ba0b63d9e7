"""DDP faults: one failing rank stops the whole CPU DDP job (gloo, 2 processes) in bounded time.

Each case runs ``python -m dvis_attn_pl test --devices 2 --accelerator cpu`` through the test hook
(``python -m tests.fault_injection``, ``DVIS_ATTN_PL_FAULT=<raise|exit|kill>:<rank>:<step>``; or kills
a rank from outside) and checks:
a non-zero exit, the failing rank named once on one stderr line and no traceback, no process of the
job left behind, and an end well before any collective timeout (gloo's default is 30 min). A hang
fails through the subprocess timeout instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dvis_attn_pl.data.synthetic import write_synthetic_dataset
from tests.fault_injection import FAULT_ENV, STAMP_ENV, command

REPO = Path(__file__).resolve().parents[1]
SMALL = ["INPUT.MIN_SIZE_TEST", "64"]
HANG_S = 150  # a run that has not ended by then hangs (a normal 2-process run takes ~12 s here)
STOP_BOUND_S = 90  # every faulty run must have ended by then (normal run + start-up + margin)
LATENCY_S = 30  # from the fault to the end of the whole job (measured: about 0.1 to 1 s)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Four short videos; and copies of their json where video 1 or 2 is 20x longer (frames repeated),
    so that with ``--max-videos 4`` rank 0 (videos 1, 3) or rank 1 (videos 2, 4) is the slow one."""
    base = tmp_path_factory.mktemp("ddp") / "set"
    write_synthetic_dataset(base, num_videos=4, height=64, width=96, min_frames=4, max_frames=7)
    sets = {"short": base / "valid.json"}
    for rank, video_id in ((0, 1), (1, 2)):
        data = json.loads((base / "valid.json").read_text())
        _stretch(data, video_id, 20)
        path = base.parent / f"rank{rank}_slow.json"
        path.write_text(json.dumps(data))
        sets[f"rank{rank}_slow"] = path
    sets["frames"] = base / "JPEGImages"
    return sets


def _stretch(data: dict, video_id: int, factor: int) -> None:
    """Make ``video_id`` ``factor`` times longer by repeating its frames (and annotations)."""
    for video in data["videos"]:
        if video["id"] == video_id:
            video["file_names"] = video["file_names"] * factor
            video["length"] = len(video["file_names"])
    for ann in data["annotations"]:
        if ann["video_id"] == video_id:
            for key in ("segmentations", "areas", "bboxes"):
                ann[key] = ann[key] * factor
            ann["length"] = len(ann["segmentations"])


class Job:
    """A 2-process ``test`` run in the background (output to files: an orphan holding a pipe
    would otherwise block the reader)."""

    def __init__(self, videos: dict, tmp_path: Path, data: str = "short", fault: str | None = None) -> None:
        self.out = tmp_path / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("DVIS_ATTN_PL_RUN_DIR", None)
        env.pop(FAULT_ENV, None)
        self.stamp = tmp_path / "fault_time"
        self.fault_time: float | None = None  # wall clock of the fault (the hook writes it)
        if fault:
            env[FAULT_ENV] = fault
            env[STAMP_ENV] = str(self.stamp)
        args = [
            "test", "--data", str(videos[data]), "--frames", str(videos["frames"]), "--out", str(self.out),
            "--devices", "2", "--accelerator", "cpu", "--max-videos", "4", "--capture", "none", *SMALL,
        ]  # fmt: skip
        self.stderr_path = tmp_path / "stderr.txt"
        self._err = self.stderr_path.open("w")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            command(*args),
            stdout=subprocess.DEVNULL, stderr=self._err, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip

    def wait(self) -> tuple[int, float]:
        """(exit status, seconds); kills the whole session and fails on a hang."""
        try:
            code = self.proc.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"the job did not end within {HANG_S} s:\n{self.stderr()[-3000:]}")
        self.end_time = time.time()
        if self.fault_time is None and self.stamp.exists():
            self.fault_time = float(self.stamp.read_text())
        return code, time.monotonic() - self.start

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace").replace("\r", "\n")

    def leftovers(self) -> list[int]:
        """Processes of this job still alive a moment after it ended (then killed)."""
        deadline = time.monotonic() + 2.0
        alive: list[psutil.Process] = []
        while time.monotonic() < deadline:
            alive = [p for p in psutil.process_iter(["cmdline"]) if str(self.out) in " ".join(p.info["cmdline"] or [])]
            if not alive:
                return []
            time.sleep(0.1)
        for p in alive:
            p.kill()
        return [p.pid for p in alive]

    def ranks(self) -> dict[int, int]:
        """{rank: pid} once both ranks run."""
        parent = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            for child in parent.children():  # rank 1 re-runs our command line (not a helper process)
                try:
                    if str(self.out) in " ".join(child.cmdline()):
                        return {0: self.proc.pid, 1: child.pid}
                except psutil.Error:
                    pass
            time.sleep(0.1)
        pytest.fail("rank 1 never started")


def error_line(stderr: str) -> str:
    """The one error line; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    stops = ("dvis_attn_pl: interrupted", "dvis_attn_pl: terminated")
    lines = [x for x in stderr.splitlines() if "error" in x.lower() or "failed" in x.lower() or x.startswith(stops)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def check_stopped(job: Job, expect_code: int | None = None) -> str:
    code, seconds = job.wait()
    leftovers = job.leftovers()  # also lets a rank that outlived rank 0 by a moment finish its line
    stderr = job.stderr()
    assert code != 0, stderr[-3000:]
    if expect_code is not None:
        assert code == expect_code, stderr[-3000:]
    assert seconds < STOP_BOUND_S, f"took {seconds:.1f} s"
    assert job.fault_time is not None, "the fault never fired"
    assert job.end_time - job.fault_time < LATENCY_S, f"stopped {job.end_time - job.fault_time:.1f} s after the fault"
    assert leftovers == [], "processes of the job were left running"
    print(f"\nexit {code}, stopped {job.end_time - job.fault_time:.2f} s after the fault, run {seconds:.1f} s")
    return error_line(stderr)


def test_raise_on_rank1_stops_the_job(videos, tmp_path):
    """Rank 1 raises at its second video while rank 0 is still working."""
    line = check_stopped(Job(videos, tmp_path, fault="raise:1:1"), expect_code=1)
    assert line.startswith("dvis_attn_pl: error: rank 1 failed: InjectedFault: injected fault on rank 1 at video 1")


def test_kill_on_rank1_stops_the_job(videos, tmp_path):
    """Rank 1 is SIGKILLed (as by the out-of-memory killer) at its first video."""
    line = check_stopped(Job(videos, tmp_path, fault="kill:1:0"), expect_code=1)
    assert line.startswith("dvis_attn_pl: error: rank 1 failed: process ")
    assert line.endswith("was killed by SIGKILL")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "data", "code", "expected"),
    [
        ("raise:0:0", "short", 1, "rank 0 failed: InjectedFault: injected fault on rank 0 at video 0"),
        ("raise:0:0", "rank1_slow", 1, "rank 0 failed: InjectedFault"),  # rank 1 busy: no orphan
        ("raise:0:1", "rank0_slow", 1, "rank 0 failed: InjectedFault"),  # rank 1 waits in a barrier
        ("exit:0:1", "short", 3, "rank 0 failed: the launching process"),
        ("kill:0:0", "rank1_slow", -signal.SIGKILL, "rank 0 failed: the launching process"),
        ("exit:1:0", "short", 3, "rank 1 failed: process"),
        ("raise:1:1", "rank1_slow", 1, "rank 1 failed: InjectedFault"),  # rank 0 waits in a barrier
        ("kill:1:1", "rank1_slow", 1, "rank 1 failed: process"),  # rank 0 waits in a barrier
    ],
)
def test_fault_stops_the_job(videos, tmp_path, fault, data, code, expected):
    line = check_stopped(Job(videos, tmp_path, data=data, fault=fault), expect_code=code)
    assert line.startswith(f"dvis_attn_pl: error: {expected}"), line


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_rank_killed_while_waiting_in_the_barrier(videos, tmp_path, victim):
    """The rank that finished its videos is SIGKILLed while it waits for the slow one."""
    slow = 1 - victim
    job = Job(videos, tmp_path, data=f"rank{slow}_slow")
    pids = job.ranks()
    waiting_part = job.out / "inference" / "parts" / f"{4 if victim == 1 else 3}.json"  # its last video
    deadline = time.monotonic() + HANG_S
    while not waiting_part.exists() and time.monotonic() < deadline and job.proc.poll() is None:
        time.sleep(0.05)
    assert waiting_part.exists(), job.stderr()[-3000:]
    time.sleep(0.5)  # now in the metric / writer barrier
    job.fault_time = time.time()
    os.kill(pids[victim], signal.SIGKILL)
    line = check_stopped(job)
    if victim == 1:
        assert line.startswith("dvis_attn_pl: error: rank 1 failed: process ") and "SIGKILL" in line
    else:
        assert line.startswith("dvis_attn_pl: error: rank 0 failed: the launching process")


def test_error_lines_name_the_file_and_errno():
    """The one-line form of file-system errors, also when wrapped (as the attention writer does)."""
    import errno

    from dvis_attn_pl.cli import describe_error
    from tests.fault_injection import InjectedFault

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/inference/parts/3.json")
    assert describe_error(full) == "/runs/x/inference/parts/3.json: No space left on device (ENOSPC)"
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("attention writer failed on /runs/x/a.safetensors") from exc
    except RuntimeError as wrapped:
        assert describe_error(wrapped) == "/runs/x/inference/parts/3.json: No space left on device (ENOSPC)"
    assert describe_error(PermissionError(errno.EACCES, "Permission denied", "/ro/run")).endswith(
        "/ro/run: Permission denied (EACCES)"
    )
    assert describe_error(InjectedFault("boom")) == "InjectedFault: boom"


@pytest.mark.parametrize(
    ("devices", "signum", "code", "line"),
    [
        ("2", signal.SIGINT, 130, "dvis_attn_pl: interrupted"),
        ("2", signal.SIGTERM, 143, "dvis_attn_pl: terminated (SIGTERM)"),
        pytest.param("1", signal.SIGINT, 130, "dvis_attn_pl: interrupted", marks=pytest.mark.slow),
        pytest.param("1", signal.SIGTERM, 143, "dvis_attn_pl: terminated (SIGTERM)", marks=pytest.mark.slow),
    ],
)
def test_stop_signal_stops_the_run_and_it_resumes(videos, tmp_path, devices, signum, code, line):
    """SIGINT (Ctrl-C in a terminal) or SIGTERM (`kill`, a scheduler's limit) to the whole process
    group in the middle of the run: status 128 + signal, one line, nothing left running; the same
    command then completes the run. (Lightning alone ignores SIGTERM in a test loop.)"""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("DVIS_ATTN_PL_RUN_DIR", None)
    env.pop(FAULT_ENV, None)
    args = [
        sys.executable, "-m", "dvis_attn_pl", "test", "--data", str(videos["rank0_slow"]),
        "--frames", str(videos["frames"]), "--out", str(out), "--devices", devices, "--accelerator", "cpu",
        "--max-videos", "4", "--capture", "none", *SMALL,
    ]  # fmt: skip
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + HANG_S
        while proc.poll() is None and not list((out / "inference" / "parts").glob("*.json")):
            assert time.monotonic() < deadline, "no video finished"
            time.sleep(0.05)
        os.killpg(proc.pid, signum)
        try:
            got = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run did not stop within 60 s of {signal.Signals(signum).name}")
    stderr = (tmp_path / "stderr.txt").read_text().replace("\r", "\n")
    assert got == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    said = [x for x in stderr.splitlines() if x.startswith("dvis_attn_pl: ") and any(
        w in x for w in ("interrupted", "terminated", "error"))]  # fmt: skip
    assert said == [line], stderr[-3000:]
    time.sleep(0.5)
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])] == []
    assert not (out / "inference" / "metrics.json").exists()
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=HANG_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "videos already complete" in rerun.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_to_one_rank(videos, tmp_path, victim, signum):
    """SIGINT or SIGTERM to one rank only (`kill <pid>`) while both work: the job stops; rank 0 says
    it was interrupted or terminated, or the line names rank 1 and the signal."""
    job = Job(videos, tmp_path, data="rank0_slow" if victim == 1 else "rank1_slow")
    pids = job.ranks()
    deadline = time.monotonic() + HANG_S
    while not list((job.out / "inference" / "parts").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    job.fault_time = time.time()
    os.kill(pids[victim], signum)
    line = check_stopped(job, expect_code=128 + signum)
    name = signal.Signals(signum).name
    if victim == 0:
        assert line == ("dvis_attn_pl: interrupted" if signum == signal.SIGINT else "dvis_attn_pl: terminated (SIGTERM)")
    else:
        assert line.startswith("dvis_attn_pl: error: rank 1 failed: process ") and line.endswith(f"was stopped by {name}")
