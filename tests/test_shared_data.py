"""A test that needs ../shared reference data it cannot find says so loudly, and fails under CI's
``DVIS_ATTN_PL_REQUIRE_GOLDEN=1`` (issue 18: a fresh clone used to show green with 137 silent skips)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.cli_run import REPO
from tests.shared_data import REQUIRE_ENV

PROBE = '''
from pathlib import Path
from tests.shared_data import needs_shared, require_shared

def test_calls_it(): require_shared(Path("/nonexistent/golden"), "golden case x")

@needs_shared(Path("/nonexistent/official"), "official configs")
def test_marked(): pass
'''


def _pytest(tmp_path, require: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_ENV}
    if require:
        env[REQUIRE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_missing_reference_data_is_a_loud_skip(tmp_path):
    proc = _pytest(tmp_path, require=False)
    assert proc.returncode == 0 and "2 skipped" in proc.stdout, proc.stdout[-2000:]
    assert "2 tests SKIPPED: shared reference data missing" in proc.stdout, proc.stdout[-2000:]
    assert "golden case x not found at /nonexistent/golden (1 tests)" in proc.stdout
    assert f"set {REQUIRE_ENV}=1" in proc.stdout


def test_missing_reference_data_fails_when_required(tmp_path):
    proc = _pytest(tmp_path, require=True)
    assert proc.returncode == 1 and "1 failed" in proc.stdout and "1 error" in proc.stdout, proc.stdout[-2000:]
    assert "Warning" not in proc.stdout, proc.stdout[-2000:]
    assert f"{REQUIRE_ENV}=1: the reference data is expected" in proc.stdout
