"""The deletion probe's rollout ordering on a constructed refiner whose time attention, pooling and class
all sit on one known frame per instance; the rollout statistics of the analysis, old records included."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from callbacks.deletion_curves import DeletionCurves, time_attention
from dvis_attn_pl.analysis.causal_cues import deletion_faithfulness, faithfulness_rows, rollout_faithfulness
from dvis_attn_pl.analysis.control_report import render_report
from dvis_attn_pl.model.capture import CaptureRequest, name_capture_sites, select_sites
from dvis_attn_pl.model.meta_arch_offline import OfflineInferenceTrace, RefinerInputs
from dvis_attn_pl.model.refiner import TemporalRefiner
from dvis_attn_pl.utils.temporal_record import (
    CATEGORY_ID,
    DELETION,
    DELETION_IMPORTANCE,
    DELETION_IMPORTANCE_FIRST,
    DELETION_LEAST_FIRST,
    DELETION_LOO_EFFECT,
    DELETION_ROLLOUT,
    FRAME_IMPORTANCE,
    REFINER_ID,
    SCORE,
)

C, T, KEYS, ABSENT = 8, 10, (6, 2), 9  # instance i's frame KEYS[i] carries everything; instance 0 is absent at ABSENT


def _constructed() -> tuple[nn.Module, RefinerInputs]:
    """A one-layer refiner whose every residual branch adds nothing (so each block is a LayerNorm), whose
    time attention sends every frame to the frame carrying ``e0``, whose pooling picks that frame and whose
    class 0 reads ``e0``: only the key frame matters, by attention, pooling and effect alike."""
    refiner = TemporalRefiner(hidden_dim=C, dim_feedforward=16, nheads=1, num_layers=1, num_classes=2)
    with torch.no_grad():
        for p in refiner.parameters():
            p.zero_()
        for m in refiner.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
        attn = refiner.transformer_time_self_attention_layers[0].self_attn
        attn.in_proj_bias[0] = 40.0  # every query is 40 e0
        attn.in_proj_weight[C : 2 * C] = torch.eye(C)  # keys are the frames themselves
        refiner.activation_proj.weight[0, 0] = 10.0
        refiner.class_embed.weight[0, 0] = 5.0
    model = nn.Module()
    model.refiner = refiner
    name_capture_sites(model)
    gen = torch.Generator().manual_seed(0)
    inst = torch.zeros(len(KEYS), T, C)
    inst[..., 1] = 1.0
    inst += 0.01 * torch.randn(inst.shape, generator=gen)
    for i, k in enumerate(KEYS):
        inst[i, k] = 0.0
        inst[i, k, 0] = 1.0
    return model.eval(), RefinerInputs(inst, torch.randn(T, 3, C, generator=gen))


@pytest.fixture(scope="module")
def probed():
    model, inputs = _constructed()
    with torch.no_grad():
        out = inputs.run(model.refiner, torch.arange(T)[None])
        pooling = model.refiner.classify(model.refiner.decoder_norm(model.refiner.refine(
            inputs.instance_embeds.permute(2, 1, 0)[None], inputs.frame_embeds.permute(2, 0, 1)[None])))[1][0]
    present = torch.ones(len(KEYS), T, dtype=torch.bool)
    present[0, ABSENT] = False
    info = OfflineInferenceTrace(video_id=1, num_frames=T, first_frame=0, image_size=(8, 8), padded_size=(8, 8),
                                 output_size=(8, 8), present=present, refiner_inputs=inputs)
    temporal = [{REFINER_ID: i, CATEGORY_ID: 1, SCORE: 0.9 - 0.1 * i, FRAME_IMPORTANCE: pooling[i].tolist()}
                for i in range(len(KEYS))]
    module = SimpleNamespace(model=model, contiguous_to_dataset_id=[1, 2])
    time_site = select_sites(model, kinds=("refiner_time",))[0]
    other = CaptureRequest(sink=lambda site, tensors: None)
    time_site.capture = other  # a request someone else made is left in place
    with torch.no_grad():
        DeletionCurves()._add(module, SimpleNamespace(info=info, temporal=temporal, video_id=1))
    assert time_site.capture is other
    time_site.capture = None
    return out, pooling, temporal


def test_the_constructed_refiner_reads_its_key_frames(probed):
    logits, pooling, _ = probed
    assert (logits[0, :, :-1].softmax(-1)[:, 0] > 0.9).all()  # class 0 with every frame
    assert pooling.argmax(dim=1).tolist() == list(KEYS)


def test_rollout_orders_remove_the_key_frame_first(probed):
    _, _, temporal = probed
    for i, entry in enumerate(temporal):
        d = entry[DELETION]
        assert int(np.argmax(d[DELETION_LOO_EFFECT])) == KEYS[i]
        assert set(d[DELETION_ROLLOUT]) == {"column_mean", "activation"}
        for readout, r in d[DELETION_ROLLOUT].items():
            importance = np.asarray(r[DELETION_IMPORTANCE])
            assert int(importance.argmax()) == KEYS[i], readout
            first, least = r[DELETION_IMPORTANCE_FIRST], r[DELETION_LEAST_FIRST]
            assert first[0] > 0.9 and max(first[1:]) < 0.3, readout  # the key frame goes first: p falls at once
            assert min(least) > 0.9, readout  # the key frame goes last: never removed
        if i == 0:  # the absent frame is out of the attention graph: no importance at all
            assert d[DELETION_ROLLOUT]["column_mean"][DELETION_IMPORTANCE][ABSENT] == 0.0


def test_time_attention_sits_on_the_key_frames():
    model, inputs = _constructed()
    with torch.no_grad():
        attn = time_attention(model.refiner, inputs)  # (N, L, T, T)
    assert attn.shape == (len(KEYS), 1, T, T)
    for i, k in enumerate(KEYS):
        assert (attn[i, 0, :, k] > 0.99).all()
    assert all(site.capture is None for site in select_sites(model, kinds=("refiner_time",)))


# ----------------------------------------------------------------------------- analysis


def _instances(videos: int = 10) -> list[tuple[int, dict, list[float]]]:
    """Records whose rollout ordering is faithful and whose pooling ordering is not."""
    rng = np.random.default_rng(0)
    fr = [0.0, 0.25, 0.5, 0.75]
    out = []
    for v in range(videos):
        w = rng.dirichlet(np.ones(8))
        d = {"fractions": fr, "importance_first": [0.9, 0.75, 0.6, 0.4], "least_first": [0.9, 0.75, 0.6, 0.4],
             "random_mean": [0.9, 0.75, 0.6, 0.4], "loo_effect": (w * 0.5).tolist(),
             "rollout": {"column_mean": {"importance": w.tolist(), "importance_first": [0.9, 0.5, 0.3, 0.1],
                                         "least_first": [0.9, 0.88, 0.85, 0.6]}}}
        out.append((v, d, rng.permutation(w).tolist()))
    return out


def test_rollout_statistics_on_constructed_records():
    instances = _instances()
    pooled = deletion_faithfulness(instances, n_boot=300)
    rollout = rollout_faithfulness([(v, d) for v, d, _ in instances], n_boot=300)["column_mean"]
    assert pooled["area_random_minus_importance"]["mean"] == 0
    assert rollout["area_random_minus_importance"]["ci95"][0] > 0
    assert rollout["area_least_minus_importance"]["ci95"][0] > 0
    assert rollout["spearman"]["mean"] == pytest.approx(1.0) and rollout["spearman_gain"]["ci95"][0] > 0
    # the pooling statistics do not depend on the rollout entry
    old = [(v, {k: x for k, x in d.items() if k != DELETION_ROLLOUT}, w) for v, d, w in instances]
    assert deletion_faithfulness(old, n_boot=300) == pooled


def test_records_written_before_the_rollout_curves_still_analyse():
    old = [(v, {k: x for k, x in d.items() if k != DELETION_ROLLOUT}, w) for v, d, w in _instances()]
    assert rollout_faithfulness([(v, d) for v, d, _ in old]) == {}
    faith = {"importance": "pooling", **deletion_faithfulness(old, n_boot=100)}  # a causal_cues.json of before
    rows = faithfulness_rows(faith)
    assert [list(r)[1:-1] for r in rows] == [["pooling weights"]] * len(rows)
    trained = {"classes": {}, "passes": {}, "faithfulness": faith}
    text = render_report({"trained": trained}, "cmd", None)
    assert "| measure | pooling weights | reading |" in text and "rollout column_mean" not in text
    instances = _instances()
    faith = {**faith, "rollout": rollout_faithfulness([(v, d) for v, d, _ in instances], n_boot=100)}
    text = render_report({"trained": {**trained, "faithfulness": faith}}, "cmd", None)
    assert "| measure | pooling weights | rollout column_mean | reading |" in text
    assert "- rollout column_mean: importance-ordered deletion beats random deletion" in text
