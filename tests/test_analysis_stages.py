"""The analyze stages: one ordered registry whose names, outputs and order are the command's."""

from dvis_attn_pl.analysis import stages
from dvis_attn_pl.analysis.causal_stage import CausalCues
from dvis_attn_pl.analysis.run_analyses import (
    CueReading,
    DecisionTiming,
    FrameImportance,
    RunComparison,
    Statistics,
    TrackerAttention,
)


def test_registry_names_and_order():
    assert stages.STAGES == ("frame_importance", "tracker", "stats", "cues", "causal", "decision", "compare",
                             "plots", "videos", "tensorboard")
    assert stages.JSON_STAGES == stages.STAGES[:7]
    assert stages.VISUAL_STAGES == ("plots", "videos", "tensorboard")
    # causal reads the cue_reading.json that cues writes earlier in the same run
    assert stages.STAGES.index("cues") < stages.STAGES.index("causal")


def test_json_stage_outputs_match_their_analyses():
    classes = {"frame_importance": FrameImportance, "tracker": TrackerAttention, "stats": Statistics,
               "cues": CueReading, "causal": CausalCues, "decision": DecisionTiming, "compare": RunComparison}
    for name, cls in classes.items():
        assert stages.stage_named(name).output == cls.output
        assert not stages.stage_named(name).visual
