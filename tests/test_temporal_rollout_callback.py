"""TemporalRollout: the stored rollout equals temporal_rollout applied to the stored refiner rows,
for the defaults and for the options; it runs as a processor passed in to the capture."""

from __future__ import annotations

import pytest
import torch

from callbacks import AttentionCapture, TemporalRollout, build_capture_callbacks
from dvis_attn_pl.analysis.rollout import rollout_readout, temporal_rollout
from tests.attention_helpers import artifact, load_manifest, run_test, synthetic_videos, tiny_model

ATOL = 1e-3  # float16 rounding of the stored result


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def default_run(tiny, tmp_path_factory):
    cfg, model = tiny
    run_dir = tmp_path_factory.mktemp("rollout")
    cbs = build_capture_callbacks("temporal", run_dir)
    run_test(cfg, model, synthetic_videos(3), cbs, keep=False)
    return run_dir, cbs


def _activation_readout(rollout: torch.Tensor, act: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    a = act.float()
    if valid is not None:
        a = a * valid
        a = a / a.sum(dim=1, keepdim=True)
    return rollout_readout(rollout, "activation", activation=a)


def test_default_rollout_equals_rollout_of_the_stored_rows(default_run):
    run_dir, _ = default_run
    manifest = load_manifest(run_dir)
    assert manifest["capture"]["rollout"]["residual"] == "identity"
    padded = False
    for vid in manifest["complete_videos"]:
        ref = artifact(run_dir, f"video_{vid}/refiner_time.safetensors")
        act = artifact(run_dir, f"video_{vid}/activation.safetensors")
        roll = artifact(run_dir, f"rolled_out/video_{vid}.safetensors")
        for key in ("instance_row", "refiner_id", "sequence_id", "present"):
            assert torch.equal(roll[key], ref[key]), key
        valid = ref["present"]
        padded |= bool((~valid).any())
        expected = temporal_rollout(ref["weights"].float(), valid=valid)
        torch.testing.assert_close(roll["rollout"].float(), expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(
            roll["readout.column_mean"].float(),
            rollout_readout(expected, "column_mean", valid=valid),
            atol=ATOL,
            rtol=0,
        )
        torch.testing.assert_close(
            roll["readout.activation"].float(),
            _activation_readout(expected, act["weights"], valid),
            atol=ATOL,
            rtol=0,
        )
        # padding frames are out of the graph: no present frame draws on them
        for i in range(valid.shape[0]):
            if (~valid[i]).any():
                assert roll["rollout"][i][valid[i]][:, ~valid[i]].abs().max().item() == 0
    assert padded, "the test videos should have instances with padding frames"


def test_in_memory_result_matches_the_file(default_run):
    run_dir, cbs = default_run
    assert len(cbs) == 1  # one callback: the capture, the rollout its processor
    (rollout,) = cbs[0].processors
    assert isinstance(rollout, TemporalRollout) and rollout.last_result is not None
    last_video = max(load_manifest(run_dir)["complete_videos"])
    stored = artifact(run_dir, f"rolled_out/video_{last_video}.safetensors")
    torch.testing.assert_close(
        rollout.last_result["rollout"].cpu(), stored["rollout"].float(), atol=ATOL, rtol=0
    )


def test_options_are_applied(tiny, tmp_path):
    cfg, model = tiny
    options = {
        "residual": "half",
        "head_fusion": "max",
        "discard_ratio": 0.3,
        "start_layer": 1,
        "readouts": ("row", "column_mean"),
        "row_frame": 0,
        "mask_padding": False,
    }
    cbs = build_capture_callbacks("temporal", tmp_path, per_head=True, rollout=options)
    run_test(cfg, model, synthetic_videos(2), cbs, keep=False)
    for vid in (0, 1):
        ref = artifact(tmp_path, f"video_{vid}/refiner_time.safetensors")
        roll = artifact(tmp_path, f"rolled_out/video_{vid}.safetensors")
        assert ref["weights"].dim() == 5  # per head
        expected = temporal_rollout(
            ref["weights"].float(), residual="half", head_fusion="max", discard_ratio=0.3, start_layer=1
        )
        torch.testing.assert_close(roll["rollout"].float(), expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(roll["readout.row"].float(), expected[:, 0], atol=ATOL, rtol=0)
        torch.testing.assert_close(
            roll["readout.column_mean"].float(), expected.mean(dim=1), atol=ATOL, rtol=0
        )
        assert "readout.activation" not in roll
    assert load_manifest(tmp_path)["capture"]["rollout"]["start_layer"] == 1


def test_runs_as_a_processor_passed_in(tiny, tmp_path):
    cfg, model = tiny
    rollout = TemporalRollout(discard_ratio=0.1)
    capture = AttentionCapture(tmp_path, preset="temporal", processors=[rollout])
    run_test(cfg, model, synthetic_videos(1), [capture], keep=False)
    assert load_manifest(tmp_path)["capture"]["rollout"] == rollout.options
    ref = artifact(tmp_path, "video_0/refiner_time.safetensors")
    roll = artifact(tmp_path, "rolled_out/video_0.safetensors")
    expected = temporal_rollout(ref["weights"].float(), valid=ref["present"], discard_ratio=0.1)
    torch.testing.assert_close(roll["rollout"].float(), expected, atol=ATOL, rtol=0)


def test_bad_setups_raise():
    with pytest.raises(ValueError, match="refiner_time"):
        AttentionCapture(None, preset=None, kinds=["tracker_cross"], processors=[TemporalRollout()])
    with pytest.raises(ValueError, match="readouts"):
        TemporalRollout(readouts=("colum_mean",))
    with pytest.raises(ValueError, match="residual"):
        TemporalRollout(residual="double")
    with pytest.raises(ValueError, match="discard"):
        TemporalRollout(discard_ratio=1.0)
