"""The test scaffolding itself: the one golden comparison and the one way to reach ``../shared``."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.golden import assert_outputs_match, prediction_order

TESTS = Path(__file__).resolve().parent


def test_prediction_order_breaks_ties_by_label_then_position():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.1])
    labels = torch.tensor([3, 0, 1, 3, 2])
    assert prediction_order(scores, labels).tolist() == [1, 2, 0, 3, 4]


def _case(scores, labels, ids, masks):
    outputs = {"v0.pred_scores": scores, "v0.pred_labels": labels, "v0.pred_ids": ids, "v0.pred_masks": masks}
    return SimpleNamespace(outputs=outputs, inputs_meta={"videos": [{"height": 4, "width": 5}]})


def test_outputs_match_whatever_the_order_of_tied_predictions():
    masks = torch.zeros(3, 2, 4, 5, dtype=torch.bool)
    masks[0, :, 0] = True
    masks[1, :, 1] = True
    masks[2, :, 2] = True
    case = _case(torch.tensor([0.7, 0.7, 0.2]), torch.tensor([2, 1, 0]), torch.tensor([5, 6, 7]), masks)
    perm = [1, 2, 0]  # the tied pair swapped
    out = {
        "pred_scores": [0.7, 0.2, 0.7], "pred_labels": [1, 0, 2], "pred_ids": [6, 7, 5],
        "pred_masks": list(masks[perm]), "image_size": (4, 5), "task": "vis",
    }  # fmt: skip
    assert_outputs_match(out, case, 0)
    out["pred_ids"] = [6, 5, 7]
    with pytest.raises(AssertionError):
        assert_outputs_match(out, case, 0)
    assert_outputs_match(out, case, 0, check_ids=False)
    out["pred_masks"] = list(masks[[0, 2, 1]])
    with pytest.raises(AssertionError):
        assert_outputs_match(out, case, 0, check_ids=False)


def test_shared_data_is_reached_only_through_require_shared():
    """Every test that needs ``../shared`` goes through ``tests/shared_data.py`` (``require_shared`` or
    ``needs_shared``), so ``DVIS_ATTN_PL_REQUIRE_GOLDEN=1`` turns each of its skips into a failure."""
    own_path = re.compile(r"""(parent|parents\[\d\])\s*/\s*["']shared["']""")
    offenders = [
        p.name for p in TESTS.glob("*.py") if p.name != "shared_data.py" and own_path.search(p.read_text())
    ]
    assert offenders == []
