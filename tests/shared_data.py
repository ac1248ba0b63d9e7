"""The reference data in ``../shared`` (golden model outputs, official configs, metric vectors).

Tests that prove equivalence with the official code need it. Where it is absent they skip with a
reason starting with :data:`MISSING`, which ``tests/conftest.py`` repeats loudly at the end of the
run; with ``DVIS_ATTN_PL_REQUIRE_GOLDEN=1`` (set by ``.ci/run``) they fail instead, so a CI run that
expects the data never turns green without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# ``../shared`` beside the checkout; DVIS_ATTN_PL_SHARED names another copy (e.g. on a machine
# where only the working tree travels)
SHARED = Path(os.environ.get("DVIS_ATTN_PL_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
REQUIRE_ENV = "DVIS_ATTN_PL_REQUIRE_GOLDEN"
MISSING = "shared reference data missing: "


def require_shared(path: Path, what: str) -> None:
    """Skip the running test (or fail it under ``DVIS_ATTN_PL_REQUIRE_GOLDEN=1``) unless ``path`` exists."""
    if Path(path).exists():
        return
    reason = f"{MISSING}{what} not found at {path}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: the reference data is expected)", pytrace=False)
    pytest.skip(reason)


def needs_shared(path: Path, what: str) -> pytest.MarkDecorator:
    """A mark: the test needs ``path`` (checked by :func:`require_shared` before it runs)."""
    return pytest.mark.needs_shared(path=Path(path), what=what)
