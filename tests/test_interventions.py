"""Interventions: parsing, frame orders, altered frames and ground truth, knockouts, the verdict rules
on constructed cases, and a real run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvis_attn_pl.analysis.causal_cues import (
    CueThresholds,
    class_statistics,
    decide,
    deletion_faithfulness,
    intervention_of,
    proxy_agrees,
)
from dvis_attn_pl.config import config_path, load_config
from dvis_attn_pl.data.rle import decode_rle
from dvis_attn_pl.data.synthetic import ensure_synthetic_dataset
from dvis_attn_pl.interventions import AlteredVideos, Intervention, frame_order, knockout, parse_interventions
from dvis_attn_pl.interventions.frames import SILHOUETTE_BACKGROUND, SILHOUETTE_OBJECT
from dvis_attn_pl.run.runner import build_dataset, build_weighted_model
from dvis_attn_pl.utils.errors import UserError
from tests.cli_run import run_cli

# ----------------------------------------------------------------------------- parsing and orders


def test_parse_expands_shuffle_and_all():
    passes = parse_interventions("freeze,shuffle", shuffle_k=3, seed=5)
    assert [p.label for p in passes] == ["freeze", "shuffle-1", "shuffle-2", "shuffle-3"]
    assert [p.seed for p in passes[1:]] == [5, 6, 7]
    every = parse_interventions("all", shuffle_k=1)
    assert {intervention_of(p.label) for p in every} == {
        "freeze", "shuffle", "reverse", "silhouette", "uniform_pooling", "no_time_attention", "tracker_memory_cut",
        "deletion",
    }


@pytest.mark.parametrize("text", ["blur", "freeze,zoom", " , "])
def test_parse_refuses_unknown(text):
    with pytest.raises(UserError, match="--interventions"):
        parse_interventions(text)


def test_parse_refuses_bad_freeze_frame():
    with pytest.raises(UserError, match="--freeze-frame"):
        parse_interventions("freeze", freeze_frame="last")


def test_frame_orders():
    t = 9
    assert frame_order(Intervention("reverse", "reverse"), t, 1) == list(range(t))[::-1]
    a = frame_order(Intervention("shuffle", "shuffle-1", seed=0), t, 1)
    assert sorted(a) == list(range(t)) and a != list(range(t))
    assert a == frame_order(Intervention("shuffle", "shuffle-1", seed=0), t, 1)  # same on every rank and rerun
    assert a != frame_order(Intervention("shuffle", "shuffle-2", seed=1), t, 1)
    assert frame_order(Intervention("freeze", "freeze"), t, 1) == [t // 2] * t
    assert frame_order(Intervention("freeze", "freeze", freeze_frame="first"), t, 1) == [0] * t
    assert frame_order(Intervention("shuffle", "shuffle-1"), 1, 1) == [0]  # one frame: nothing to shuffle


# ----------------------------------------------------------------------------- altered videos


@pytest.fixture(scope="module")
def dataset():
    root = ensure_synthetic_dataset()
    cfg = load_config(config_path("tiny_fish"))
    ds, _ = build_dataset(root / "valid.json", root / "JPEGImages", cfg, 2)
    return ds


def test_altered_frames_and_ground_truth_follow_the_order(dataset):
    item = dataset[0]
    frames = item["image"].materialize()
    for intervention in (Intervention("reverse", "reverse"), Intervention("shuffle", "shuffle-1", seed=3)):
        altered = AlteredVideos(dataset, intervention)[0]
        order = altered["intervention"]["order"]
        shown = list(altered["image"])
        assert len(shown) == len(frames)
        for t, j in enumerate(order):
            assert torch.equal(shown[t], frames[j])
        for a, b in zip(altered["annotations"], item["annotations"]):
            assert a["segmentations"] == [b["segmentations"][j] for j in order]
            assert a["areas"] == [b["areas"][j] for j in order]


def test_eager_frames_follow_the_order_too(dataset):
    from dvis_attn_pl.data.dataset import YTVISVideoDataset

    root = ensure_synthetic_dataset()
    eager = YTVISVideoDataset.from_data(dataset.data, root / "JPEGImages", load_config(config_path("tiny_fish")), eager=True)
    frames = dataset[0]["image"].materialize()
    for name in ("freeze", "silhouette"):
        altered = AlteredVideos(eager, Intervention(name, name))[0]
        assert isinstance(altered["image"], list) and len(altered["image"]) == len(frames)
        if name == "freeze":
            assert all(torch.equal(f, frames[len(frames) // 2]) for f in altered["image"])


def test_silhouette_draws_the_masks_flat(dataset):
    item = dataset[0]
    altered = AlteredVideos(dataset, Intervention("silhouette", "silhouette"))[0]
    t = 0
    frame = altered["image"][t].permute(1, 2, 0).numpy()
    colours = {tuple(c) for c in frame.reshape(-1, 3).tolist()}
    assert colours <= {SILHOUETTE_BACKGROUND, SILHOUETTE_OBJECT}
    union = np.zeros(frame.shape[:2], dtype=bool)
    for ann in item["annotations"]:
        if ann["segmentations"][t] is not None:
            union |= decode_rle(ann["segmentations"][t]).astype(bool)
    assert union.any()
    drawn = (frame == SILHOUETTE_OBJECT).all(axis=2)
    assert np.array_equal(drawn, union)  # tiny_fish does not resize the 240x320 frames


def test_silhouette_without_masks_is_refused(dataset, monkeypatch):
    monkeypatch.setattr(type(dataset), "has_annotations", property(lambda self: False))
    with pytest.raises(UserError, match="silhouette"):
        AlteredVideos(dataset, Intervention("silhouette", "silhouette"))


# ----------------------------------------------------------------------------- knockouts


@pytest.fixture(scope="module")
def model():
    cfg = load_config(config_path("tiny_fish"))
    from dvis_attn_pl.weights import shipped_weights

    return build_weighted_model(cfg, str(shipped_weights()), False).eval()


def _run(model, item):
    with torch.no_grad():
        return model.run_with_trace([item])


@pytest.mark.parametrize("name", ["uniform_pooling", "no_time_attention", "tracker_memory_cut"])
def test_knockout_changes_the_model_and_leaves_it_as_it_was(model, dataset, name):
    item = dataset[1]
    _, before = _run(model, item)
    with knockout(model, Intervention(name, name)):
        _, altered = _run(model, item)
    _, after = _run(model, item)
    assert torch.equal(before.class_logits, after.class_logits)  # hooks removed
    assert not torch.allclose(before.class_logits, altered.class_logits)
    if name == "uniform_pooling":
        t = altered.pooling_weights.shape[1]
        assert torch.allclose(altered.pooling_weights, torch.full_like(altered.pooling_weights, 1 / t))


# ----------------------------------------------------------------------------- verdict rules


def _pairs(videos: int, p0: float, p1: float, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for v in range(videos):
        a = float(np.clip(p0 + rng.normal(0, noise), 0.01, 1))
        b = float(np.clip(p1 + rng.normal(0, noise), 0.0, 1))
        out.append((v, a, b))
    return out


def test_verdicts_on_constructed_cases():
    # class: (freeze p1, shuffle p1) with p0 = 0.9
    design = {
        "app": (0.9, 0.9, "appearance"),
        "set": (0.1, 0.88, "frame-set integration"),
        "ord": (0.1, 0.1, "ordered motion"),
        "mix": (0.63, 0.9, "mixed"),
    }
    pairs = {"freeze": {}, "shuffle": {}}
    unaltered = {}
    for i, (c, (fz, sh, _)) in enumerate(design.items()):
        pairs["freeze"][c] = _pairs(20, 0.9, fz, 0.02, i)
        pairs["shuffle"][c] = _pairs(20, 0.9, sh, 0.02, 10 + i)
        unaltered[c] = [(v, p0) for v, p0, _ in pairs["freeze"][c]]
    # a class the model does not know, and one whose freeze ratio is pure noise around the keep threshold
    unaltered["weak"] = [(v, 0.1) for v in range(20)]
    pairs["freeze"]["weak"] = [(v, 0.1, 0.1) for v in range(20)]
    noisy = _pairs(4, 0.9, 0.8, 0.3, 99)
    pairs["freeze"]["noisy"] = noisy
    unaltered["noisy"] = [(v, p0) for v, p0, _ in noisy]
    stats = class_statistics(pairs, unaltered, num_classes=5, th=CueThresholds(n_boot=1000))
    for c, (_, _, verdict) in design.items():
        assert stats[c]["verdict"] == verdict, (c, stats[c])
    assert stats["weak"]["verdict"] == "not recognised"
    assert stats["noisy"]["verdict"] == "undetermined"


def test_freeze_that_pulls_other_classes_in_is_no_evidence_of_appearance():
    """Two classes both keep their probability under freeze; frozen objects of the other classes move
    to "still" (the class of the still-standing motion) and not to "look": only "look" reads as appearance."""
    rng = np.random.default_rng(5)
    pairs = {"freeze": {"look": _pairs(20, 0.9, 0.9, 0.02, 1), "still": _pairs(20, 0.9, 0.9, 0.02, 2)}}
    unaltered = {c: [(v, p0) for v, p0, _ in pairs["freeze"][c]] for c in ("look", "still")}
    gains = {"freeze": {
        "look": [(v, float(rng.normal(0.0, 0.01))) for v in range(20)],
        "still": [(v, float(rng.normal(0.45, 0.05))) for v in range(20)],
    }}
    stats = class_statistics(pairs, unaltered, num_classes=5, th=CueThresholds(n_boot=1000), gains=gains)
    assert stats["look"]["verdict"] == "appearance"
    assert stats["still"]["verdict"] == "undetermined" and "attraction" in stats["still"]["reason"]
    assert stats["still"]["interventions"]["freeze"]["attraction"]["ci95"][0] > 0.3
    # a looser bound lets it through; without other classes there is no attraction to weigh
    loose = class_statistics(pairs, unaltered, 5, CueThresholds(n_boot=1000, max_attraction=0.9), gains)
    assert loose["still"]["verdict"] == "appearance"
    assert class_statistics(pairs, unaltered, 5, CueThresholds(n_boot=1000))["still"]["verdict"] == "appearance"
    # the control report shows the attraction and says what the verdict rests on
    from dvis_attn_pl.analysis.control_report import render_report

    classes = {c: {**row, "name": c, "designed_cue": {"look": "appearance", "still": "motion"}[c], "proxy_agrees": None}
               for c, row in stats.items()}
    text = render_report({"trained": {"classes": classes, "passes": {}}}, "cmd", None)
    assert "| freeze attraction |" in text and "Causal verdict = designed cue: **1 of 2**" in text
    assert "pulls the other species' objects towards it (attraction +0.4" in text


def test_report_explains_an_unrecognised_motion_species_by_what_its_inputs_allow():
    from dvis_attn_pl.analysis.control_report import render_report

    classes = {"drift": {"name": "drift", "designed_cue": "motion", "verdict": "not recognised", "reason": "low p",
                         "unaltered": {"mean_p": 0.2, "n_objects": 5}, "interventions": {}, "proxy_agrees": None}}
    kinds = {"true": 0.8, "instance": 0.25, "frame": 0.3}
    separability = {"labels": [2], "chance": 1 / 3, "tracks": 5, "min_frames": 6,
                    "kinds": {k: {"title": k, "scored": 5, "accuracy": a} for k, a in kinds.items()}}
    probes = {"trained": {"lag": 4, "tracks": 5, "videos": 2, "sources": {}, "separability": separability}}
    runs = {"trained": {"classes": classes, "passes": {}}}
    text = render_report(runs, "cmd", None, probes=probes)
    assert ("names the right look-alike for 0.30 of the motion tracks from the frame queries and 0.25 from the "
            "instance queries (from the true path 0.80; chance 0.33") in text
    assert "| trained | true | 5 | 0.80 |" in text
    assert "What its inputs allow" not in render_report(runs, "cmd", None)


def test_verdict_thresholds_are_checked():
    from dvis_attn_pl.utils.errors import UserError

    for bad in ({"keep": 0.4, "drop": 0.5}, {"alpha": 1.5}, {"max_attraction": -0.1}):
        with pytest.raises(UserError):
            CueThresholds(**bad)


def test_decide_needs_shuffle_after_a_freeze_drop():
    assert decide({"freeze": "drops"}, recognised=True)[0] == "undetermined"
    assert decide({"freeze": "drops", "shuffle": "undetermined"}, recognised=True)[0] == "undetermined"
    assert decide({"freeze": "keeps"}, recognised=False)[0] == "not recognised"


def test_proxy_agreement():
    assert proxy_agrees("appearance-based", "appearance") is True
    assert proxy_agrees("motion-based", "ordered motion") is True
    assert proxy_agrees("motion-based", "appearance") is False
    assert proxy_agrees("inconclusive", "appearance") is None
    assert proxy_agrees("appearance-based", "undetermined") is None


# ----------------------------------------------------------------------------- through the CLI


def test_cli_interventions_real_config_random_weights(tmp_path):
    out = tmp_path / "run"
    r = run_cli(["test", "--random-weights", "--max-videos", "2", "--capture", "none", "--out", str(out),
                 "--interventions", "freeze,shuffle,no_time_attention", "--shuffle-k", "2"], threads=2, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for label in ("freeze", "shuffle-1", "shuffle-2", "no_time_attention"):
        info = json.loads((out / "interventions" / label / "intervention.json").read_text())
        assert info["label"] == label and set(info["frame_order"]) == {"1", "2"} or len(info["frame_order"]) == 2
        assert (out / "interventions" / label / "inference" / "results.json").is_file()
        assert (out / "interventions" / label / "inference" / "metrics.json").is_file()
    temporal = json.loads((out / "inference" / "results_temporal.json").read_text())
    assert temporal and all(abs(sum(p["class_probs"].values()) - 1) < 1.01 for p in temporal)
    r = run_cli(["analyze", str(out), "--only", "cues,causal", "--no-video"], threads=2)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((out / "inference" / "causal_cues.json").read_text())
    assert doc["random_weights"] is True
    # random weights: no confident verdict
    assert {row["verdict"] for row in doc["classes"].values()} <= {"not recognised", "undetermined"}
    assert all("freeze_attraction" in row for row in doc["table"])
    assert all("attraction" in v for row in doc["classes"].values() for v in row["interventions"].values())
    assert "attraction" in r.stdout.splitlines()[0]


def test_cli_unknown_intervention_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = run_cli(["test", "--random-weights", "--max-videos", "1", "--out", str(out), "--interventions", "blur"])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown intervention 'blur'" in r.stderr
    assert not out.exists()


def test_deletion_faithfulness_on_constructed_curves():
    fr = [0.0, 0.25, 0.5, 0.75]
    faithful = {"fractions": fr, "importance_first": [0.9, 0.5, 0.3, 0.1], "least_first": [0.9, 0.88, 0.85, 0.6],
                "random_mean": [0.9, 0.75, 0.6, 0.4]}
    rng = np.random.default_rng(0)
    instances = []
    for v in range(10):
        w = rng.dirichlet(np.ones(8))
        instances.append((v, {**faithful, "loo_effect": (w * 0.5 + rng.normal(0, 0.001, 8)).tolist()}, w.tolist()))
    doc = deletion_faithfulness(instances, n_boot=500)
    assert doc["area_random_minus_importance"]["ci95"][0] > 0
    assert doc["spearman"]["mean"] > 0.9 and abs(doc["spearman_random"]["mean"]) < 0.2
    assert doc["spearman_gain"]["ci95"][0] > 0
    unfaithful = [(v, {**d, "importance_first": d["random_mean"]}, list(reversed(w))) for v, d, w in instances]
    doc = deletion_faithfulness(unfaithful, n_boot=500)
    assert doc["area_random_minus_importance"]["mean"] == 0


def test_cli_deletion_curves_start_at_the_pass_probability(tmp_path):
    out = tmp_path / "run"
    r = run_cli(["test", "--max-videos", "1", "--capture", "none", "--out", str(out), "--interventions", "deletion"],
                threads=2, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    records = json.loads((out / "interventions" / "deletion" / "inference" / "results_temporal.json").read_text())
    with_curves = [p for p in records if "deletion" in p]
    assert with_curves
    for p in with_curves:
        d = p["deletion"]
        assert len(d["importance_first"]) == len(d["fractions"]) == len(d["random_mean"])
        assert len(d["loo_effect"]) == len(p["frame_importance"])
        # nothing removed: the refiner re-run reproduces the pass's own class probability
        assert d["importance_first"][0] == pytest.approx(p["class_probs"][str(p["category_id"])], abs=1e-4)
        assert set(d["rollout"]) == {"column_mean", "activation"}  # the rollout orderings, on the same frames
        for ro in d["rollout"].values():
            assert len(ro["importance"]) == len(p["frame_importance"])
            assert len(ro["importance_first"]) == len(ro["least_first"]) == len(d["fractions"])
            assert ro["importance_first"][0] == ro["least_first"][0] == d["importance_first"][0]
    r = run_cli(["analyze", str(out), "--only", "causal", "--no-video", "--no-tensorboard"], threads=2)
    assert r.returncode == 0, r.stderr[-2000:]
    faith = json.loads((out / "inference" / "causal_cues.json").read_text())["faithfulness"]
    if faith:  # predictions scored >= 0.5: the rollout orderings are reported beside the pooling weights
        assert set(faith["rollout"]) == {"column_mean", "activation"}
        assert faith["rollout"]["column_mean"]["instances"] == faith["instances"]
        assert "rollout column_mean" in r.stdout


@pytest.mark.slow
def test_control_command_writes_its_report(tmp_path):
    report = tmp_path / "docs" / "control.md"
    r = run_cli(["control", "--skip-sanity", "--held-out-videos", "0", "--max-videos", "2", "--interventions", "freeze,shuffle,deletion",
                 "--shuffle-k", "1", "--out", str(tmp_path / "runs"), "--report", str(report)], threads=2, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    text = report.read_text()
    doc = json.loads((tmp_path / "runs" / "control_experiment.json").read_text())
    assert (report.parent / "control_ratios.png").is_file()
    for row in doc["trained"]["classes"].values():  # every species in the report, with its verdict
        assert f"| {row['name']} |" in text and f"**{row['verdict']}**" in text
    assert f"**{doc['goals']['verdict_is_designed_cue']} of {doc['goals']['species']}**" in text
    probe = doc["position_probe"]["trained"]  # what the refiner can see, on the same two videos
    assert probe["videos"] <= 2 and "## What the refiner can see" in text
    assert f"| trained | instance queries (tracker) | {probe['tracks']} ({probe['videos']}) |" in text
    assert probe["separability"]["labels"] == [2, 3, 4]  # the look-alike motion species (ids 3, 4, 5)
    assert "Could the motion species be told apart" in text


@pytest.mark.slow
def test_interventions_under_ddp_match_one_process(small_set, tmp_path):
    """Intervention passes under CPU DDP (gloo, 2 processes) write the same files as on one process."""
    from tests.cli_run import SMALL, data_args

    runs = {}
    for devices in ("1", "2"):
        out = tmp_path / f"d{devices}"
        proc = run_cli(["test", *data_args(small_set), "--accelerator", "cpu", "--devices", devices, "--out", str(out),
                        "--capture", "none", "--interventions", "freeze,shuffle,no_time_attention,deletion",
                        "--shuffle-k", "1", *SMALL], timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[devices] = out
    for label in ("freeze", "shuffle-1", "no_time_attention", "deletion"):
        for name in ("intervention.json", "inference/results_temporal.json", "inference/metrics.json"):
            a = (runs["1"] / "interventions" / label / name).read_bytes()
            assert a == (runs["2"] / "interventions" / label / name).read_bytes(), (label, name)
