"""Test-session hooks and shared fixtures: tests marked ``needs_shared`` check their reference data first, and a run
that skipped tests for want of it says so at the end, loudly (see ``tests/shared_data.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shared_data import MISSING, REQUIRE_ENV, require_shared


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_shared(path, what): needs reference data in ../shared (skipped loudly, or failed under "
        f"{REQUIRE_ENV}=1)",
    )


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("needs_shared"):
        require_shared(mark.kwargs["path"], mark.kwargs["what"])


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_terminal_summary(terminalreporter) -> None:
    reasons = [_skip_reason(r) for r in terminalreporter.stats.get("skipped", [])]
    missing = [r[r.index(MISSING) + len(MISSING):] for r in reasons if MISSING in r]
    if not missing:
        return
    terminalreporter.write_sep(
        "!", f"{len(missing)} tests SKIPPED: shared reference data missing (equivalence NOT checked)", red=True, bold=True
    )
    for what in sorted(set(missing)):
        terminalreporter.write_line(f"  {what} ({missing.count(what)} tests)", red=True)
    terminalreporter.write_line(f"  set {REQUIRE_ENV}=1 to make these failures (CI does)", red=True)


# ------------------------------------------------------------ shared synthetic data
@pytest.fixture(scope="session")
def small_set(tmp_path_factory) -> Path:
    """Three short synthetic fish videos, 64x96, 4 to 7 frames (an odd count, for DDP), built once per
    session. Read-only: a test that needs a changed copy writes it under its own ``tmp_path``."""
    from dvis_attn_pl.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("small_set") / "set"
    return write_synthetic_dataset(root, num_videos=3, height=64, width=96, min_frames=4, max_frames=7)


# ------------------------------------------------------------ the bad-input catalogues' inputs
@pytest.fixture(scope="module")
def data_set(tmp_path_factory) -> Path:
    """Two synthetic videos of 3 frames, 64x96 (5 categories, as the tiny config)."""
    from dvis_attn_pl.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("bad_inputs") / "set"
    return write_synthetic_dataset(root, num_videos=2, height=64, width=96, min_frames=3, max_frames=3)


@pytest.fixture(scope="module")
def tiny_state() -> dict:
    """The state dict of the default tiny model (configs/tiny_cpu.yaml), random weights."""
    import torch

    from dvis_attn_pl.config import config_path, load_config
    from dvis_attn_pl.model.build import build_model

    torch.manual_seed(0)
    return build_model(load_config(config_path("tiny_cpu"))).state_dict()
