"""The shipped and official model configs at full size: official state-dict layout and size, strict
checkpoint round trips in the official file layouts, and a short CPU video in the official format.

Layout checks build on the ``meta`` device (shapes only, no memory). Full-size builds are few: one
online and one offline R50 round trip here, every other R50 config and the ViT-L fish-way model
under ``-m slow``. The fish-way configs also run at the golden case's tiny sizes and must reproduce
the official (fish-dvis) outputs.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dvis_attn_pl import build_model, load_checkpoint, load_config
from dvis_attn_pl.config import config_path
from dvis_attn_pl.data.transforms import ShortestEdgeResize
from tests.golden import SHARED, assert_outputs_match, golden_case
from tests.rss import peak_mib, reset_peak, rss_mib
from tests.shared_data import require_shared
from tests.vis_output import check_vis_output, smooth_frames

OFFICIAL = SHARED / "official_configs"
DAQ = OFFICIAL / "dvis_plus_DVIS_DAQ" / "configs" / "dvis_daq"
FISH = OFFICIAL / "fish-dvis" / "configs"

R50_CONFIGS = {
    "ours-online-ytvis19": config_path("dvis_daq_r50_online_ytvis19"),
    "ours-online-ytvis21": config_path("dvis_daq_r50_online_ytvis21"),
    "ours-offline-ytvis19": config_path("dvis_daq_r50_offline_ytvis19"),
    "official-ytvis19-online": DAQ / "ytvis19" / "DAQ_Online_R50.yaml",
    "official-ytvis21-online": DAQ / "ytvis21" / "DAQ_Online_R50.yaml",
    "official-ovis-online": DAQ / "ovis" / "DAQ_Online_R50.yaml",
    "official-ovis-offline": DAQ / "ovis" / "DAQ_Offline_R50.yaml",
}
FISHWAY_CONFIGS = {
    "ours-fishway": config_path("dvis_daq_vitl_offline_fishway"),
    "fish-dvis-camera": FISH / "DAQ_Fishway_config_camera.yaml",
    "fish-dvis-silhouette": FISH / "DAQ_Fishway_config_silhouette.yaml",
}
OFFICIAL_VITL_OFFLINE = DAQ / "ytvis21" / "vit_adapter" / "DAQ_Offline_VitAdapterL.yaml"

SMALL = ["INPUT.MIN_SIZE_TEST", "64"]  # frames of 72x120 become 64x107, padded to 64x128
ORIGINAL_HW = (72, 120)

# dvis_daq_architecture.md §3.2 (R50, hidden 256, K = 40): keys per prefix and element counts.
# The element counts there are rounded (62.89M, 11.26M, 3.15M); these are the exact values.
R50_ONLINE_PREFIX_KEYS = {"backbone": 265, "sem_seg_head": 298, "tracker": 236, "daq_criterion": 1}
R50_ONLINE_KEYS, R50_ONLINE_ELEMENTS_K40 = 800, 62_892_283
REFINER_KEYS, REFINER_ELEMENTS_K40 = 156, 11_263_274
LOCAL_ATTN_KEYS, LOCAL_ATTN_ELEMENTS = 36, 3_151_872
CLASS_HEAD_PER_CLASS = 256 + 1  # one (K+1, 256) weight row and one bias per class

# The ViT-Adapter-L DVIS-DAQ offline model with K = 5 (fish-way), USE_LOCAL_ATTN.
VITL_FISHWAY_KEYS, VITL_FISHWAY_ELEMENTS = 1257, 381_347_619
# DINOv2 ViT-L/14 has 304,368,640 parameters; the adapter's copy has a 16x16 patch embedding.
VITL_VIT_MODULE_ELEMENTS = 304_368_640 + 1024 * 3 * (16 * 16 - 14 * 14)

# The golden fish-way case's overrides (shared/golden/vitadapter_offline_tiny/README.md) plus its ViT sizes.
FISH_TINY = [
    "MODEL.WEIGHTS", "",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64", "MODEL.SEM_SEG_HEAD.MASK_DIM", "64",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "2", "MODEL.MASK_FORMER.HIDDEN_DIM", "64",
    "MODEL.MASK_FORMER.NHEADS", "8", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "128",
    "MODEL.MASK_FORMER.DEC_LAYERS", "4", "MODEL.MASK_FORMER.REID_HIDDEN_DIM", "64",
    "MODEL.TRACKER.DECODER_LAYERS", "2", "INPUT.MIN_SIZE_TEST", "96",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "20",
    "MODEL.VIDEO_HEAD.NUM_NEW_INS", "5", "MODEL.REFINER.DECODER_LAYERS", "2",
    "MODEL.VIT_ADAPTER.VIT_WEIGHT", "", "MODEL.VIT_ADAPTER.WITH_CP", "False",
    "MODEL.VIT_ADAPTER.EMBED_DIM", "64", "MODEL.VIT_ADAPTER.DEPTH", "4", "MODEL.VIT_ADAPTER.NUM_HEADS", "4",
    "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", "4", "MODEL.VIT_ADAPTER.CONV_INPLANE", "16",
    "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", "[[0, 0], [1, 1], [2, 2], [3, 3]]",
]  # fmt: skip


def _existing(path: Path) -> Path:
    require_shared(path, "official config")
    return path


def _spec(cfg) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the model's state dict, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _elements(spec: dict[str, tuple[int, ...]]) -> int:
    return sum(int(torch.Size(s).numel()) for s in spec.values())


def _prefix_keys(spec: dict[str, tuple[int, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in spec:
        top = key.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return counts


# ------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("name", list(R50_CONFIGS))
def test_r50_layout_matches_the_architecture_notes(name):
    cfg = load_config(_existing(R50_CONFIGS[name]))
    spec = _spec(cfg)
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    offline = cfg.MODEL.META_ARCHITECTURE == "DVIS_DAQ_offline"
    assert not cfg.MODEL.VIDEO_HEAD.USE_LOCAL_ATTN and cfg.MODEL.REFINER.DECODER_LAYERS == 6

    expected_keys = dict(R50_ONLINE_PREFIX_KEYS, **({"refiner": REFINER_KEYS} if offline else {}))
    assert _prefix_keys(spec) == expected_keys
    assert len(spec) == R50_ONLINE_KEYS + (REFINER_KEYS if offline else 0)
    heads = 3 if offline else 2  # class_embed of the segmenter, the tracker (and the refiner)
    expected = R50_ONLINE_ELEMENTS_K40 + (REFINER_ELEMENTS_K40 if offline else 0)
    expected += (k - 40) * (heads * CLASS_HEAD_PER_CLASS + 1)  # + daq_criterion.empty_weight
    assert _elements(spec) == expected
    assert spec["daq_criterion.empty_weight"] == (k + 1,)
    assert "pixel_mean" not in spec and "pixel_std" not in spec


def test_section_3_2_rounded_numbers():
    """The exact counts above agree with the rounded numbers of dvis_daq_architecture.md §3.2."""
    assert round(R50_ONLINE_ELEMENTS_K40 / 1e6, 2) == 62.89
    assert round(REFINER_ELEMENTS_K40 / 1e6, 2) == 11.26
    assert round(LOCAL_ATTN_ELEMENTS / 1e6, 2) == 3.15
    online = _spec(load_config(R50_CONFIGS["ours-online-ytvis19"]))
    backbone = sum(int(torch.Size(s).numel()) for k, s in online.items() if k.startswith("backbone."))
    frozen_bn_stats = sum(
        int(torch.Size(s).numel()) for k, s in online.items() if k.startswith("backbone.") and "running_" in k
    )
    assert round((backbone - frozen_bn_stats) / 1e6, 2) == 23.51  # "the R50 trunk comes to 23.51M"


def test_local_attention_adds_36_refiner_keys():
    cfg = load_config(R50_CONFIGS["ours-offline-ytvis19"], ["MODEL.VIDEO_HEAD.USE_LOCAL_ATTN", "True"])
    plain = _spec(load_config(R50_CONFIGS["ours-offline-ytvis19"]))
    local = _spec(cfg)
    extra = sorted(set(local) - set(plain))
    assert set(plain) <= set(local) and len(extra) == LOCAL_ATTN_KEYS
    assert all(k.startswith(("refiner.conv_short_aggregate_layers.", "refiner.conv_norms.")) for k in extra)
    assert sum(int(torch.Size(local[k]).numel()) for k in extra) == LOCAL_ATTN_ELEMENTS


def test_our_configs_have_the_official_layouts():
    """Our shipped configs give the same state dict (keys and shapes) as the official files."""
    spec = {name: _spec(load_config(_existing(path))) for name, path in R50_CONFIGS.items()}
    assert spec["ours-online-ytvis19"] == spec["official-ytvis19-online"]
    assert spec["ours-online-ytvis21"] == spec["official-ytvis21-online"]
    # our offline YTVIS19 model is the official OVIS offline R50 recipe with 40 classes
    ovis40 = load_config(R50_CONFIGS["official-ovis-offline"], ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "40"])
    assert spec["ours-offline-ytvis19"] == _spec(ovis40)


def test_vitl_fishway_layout_and_size():
    specs = {name: _spec(load_config(_existing(path))) for name, path in FISHWAY_CONFIGS.items()}
    ours = specs["ours-fishway"]
    assert all(s == ours for s in specs.values())
    assert len(ours) == VITL_FISHWAY_KEYS and _elements(ours) == VITL_FISHWAY_ELEMENTS
    vit = sum(int(torch.Size(s).numel()) for k, s in ours.items() if k.startswith("backbone.vit_module."))
    assert vit == VITL_VIT_MODULE_ELEMENTS
    assert ours["backbone.vit_module.patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert len({k.split(".")[3] for k in ours if k.startswith("backbone.vit_module.blocks.")}) == 24
    assert ours["daq_criterion.empty_weight"] == (6,)
    assert "refiner.conv_norms.5.weight" in ours  # USE_LOCAL_ATTN
    # the official YTVIS21 ViT-L offline model with the fish-way's 5 classes has the same layout
    official = load_config(_existing(OFFICIAL_VITL_OFFLINE), ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"])
    assert _spec(official) == ours


# ------------------------------------------------------------------------------------ round trips
def _video(cfg, num_frames: int) -> list[dict]:
    """One video in the official input format: frames resized by the official test-time resize."""
    resize = ShortestEdgeResize.from_cfg(cfg)
    frames = [resize(f) for f in smooth_frames(num_frames, *ORIGINAL_HW)]
    h, w = ORIGINAL_HW
    return [{"image": frames, "height": h, "width": w, "length": num_frames, "video_id": 7}]


def _randomise_buffers(model: torch.nn.Module) -> None:
    """Give the norm statistics values a fresh model does not have, so the round trip must load them."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:  # the detectron2 checkpointer's layout
        torch.save({"model": state, "iteration": 159_999}, path)
    return path


def _assert_same_outputs(a: dict, b: dict) -> None:
    assert a["pred_scores"] == b["pred_scores"]
    assert a["pred_labels"] == b["pred_labels"] and a["pred_ids"] == b["pred_ids"]
    assert all(torch.equal(x, y) for x, y in zip(a["pred_masks"], b["pred_masks"]))


def _round_trip(cfg, tmp_path: Path, suffixes: tuple[str, ...], num_frames: int) -> dict:
    """Random weights -> official-layout files -> strict load into a fresh model -> same outputs."""
    torch.manual_seed(0)
    source = build_model(cfg)
    _randomise_buffers(source)
    state = source.state_dict()
    video = _video(cfg, num_frames)
    with torch.no_grad():
        expected = source(video)
    del source

    torch.manual_seed(1)
    target = build_model(cfg)
    assert not torch.equal(
        target.state_dict()["tracker.class_embed.weight"], state["tracker.class_embed.weight"]
    )
    for suffix in suffixes:
        path = _save(state, tmp_path / f"model{suffix}")
        with torch.no_grad():
            for value in target.state_dict().values():  # forget whatever an earlier load put there
                value.zero_()
        load_checkpoint(target, path)
        loaded = target.state_dict()
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], v) for k, v in state.items()), suffix
        path.unlink()
    assert not target.training
    with torch.no_grad():
        out, info = target.run_with_trace(video)
    _assert_same_outputs(out, expected)
    check_vis_output(
        out,
        num_frames=num_frames,
        output_size=ORIGINAL_HW,
        num_classes=int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
        max_num=int(cfg.MODEL.MASK_FORMER.TEST.MAX_NUM),
        num_rows=len(info.row_seq_ids),
    )
    assert info.image_size == (64, 107) and info.padded_size == (64, 128)
    return out


def test_r50_online_full_size_round_trip_pth_and_safetensors(tmp_path):
    cfg = load_config(R50_CONFIGS["ours-online-ytvis19"], SMALL)
    _round_trip(cfg, tmp_path, (".pth", ".safetensors"), num_frames=3)


def test_r50_offline_full_size_round_trip(tmp_path):
    """The only official R50 offline config; 6 frames = two segmenter windows (5 + 1)."""
    cfg = load_config(_existing(R50_CONFIGS["official-ovis-offline"]), SMALL)
    _round_trip(cfg, tmp_path, (".pth",), num_frames=6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in R50_CONFIGS if n not in ("ours-online-ytvis19", "official-ovis-offline")]
)
def test_every_other_r50_config_full_size_round_trip(name, tmp_path):
    cfg = load_config(_existing(R50_CONFIGS[name]), SMALL)
    _round_trip(cfg, tmp_path, (".pth",), num_frames=4)


# ------------------------------------------------------------------------------------ fish-way
@pytest.mark.parametrize("name", list(FISHWAY_CONFIGS))
def test_fishway_config_at_tiny_sizes_reproduces_fish_dvis(name):
    """Each fish-way config with the golden case's tiny overrides: fish-dvis behaviour (one window
    of up to 100 frames, tracker ``forward_offline_mode``), the golden weights load strictly and
    the official fish-dvis outputs come out."""
    case = golden_case("vitadapter_offline_tiny")
    cfg = load_config(_existing(FISHWAY_CONFIGS[name]), FISH_TINY)
    assert cfg.MODEL.COMPAT == "fish-dvis"
    model = build_model(cfg)
    assert model.window_size == 100 and model.fish_compat
    load_checkpoint(model, case.path / "model.safetensors")
    for video in range(case.num_videos):
        with torch.no_grad():
            out, info = model.run_with_trace(case.batched_inputs(video))
        assert_outputs_match(out, case, video)
        meta = case.inputs_meta["videos"][video]
        check_vis_output(
            out,
            num_frames=meta["length"],
            output_size=(meta["height"], meta["width"]),
            num_classes=5,
            max_num=int(cfg.MODEL.MASK_FORMER.TEST.MAX_NUM),
            num_rows=len(info.refiner_ids),
        )


@pytest.mark.slow
def test_vitl_fishway_full_size_round_trip_and_short_video(tmp_path):
    """ViT-Adapter-L (381M elements): official .pth layout, strict load, 3 frames at 64 px on CPU.

    Measured on the 2-core dev machine (fp32 weights 1.45 GB): build ~4 s; process peak RSS
    ~3.5 GB (while reading the memory-mapped file into the model's tensors); the forward itself
    adds ~0.1 GB over the loaded model's RSS."""
    cfg = load_config(config_path("dvis_daq_vitl_offline_fishway"), SMALL)
    start = time.perf_counter()
    resettable = reset_peak()
    torch.manual_seed(0)
    source = build_model(cfg)
    state = source.state_dict()
    assert len(state) == VITL_FISHWAY_KEYS and sum(v.numel() for v in state.values()) == VITL_FISHWAY_ELEMENTS
    params = sum(p.numel() for p in source.parameters())
    path = _save(state, tmp_path / "vitl_fishway.pth")
    probe = {
        k: state[k].clone()
        for k in ("backbone.vit_module.blocks.23.attn.qkv.weight", "refiner.class_embed.bias")
    }
    del source, state
    gc.collect()
    peaks = {"build+save": peak_mib()}

    reset_peak()
    torch.manual_seed(1)
    model = build_model(cfg)
    load_checkpoint(model, path)
    path.unlink()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in probe.items())
    peaks["build+load"] = peak_mib()
    video = _video(cfg, 3)
    gc.collect()
    before = rss_mib()
    reset_peak()
    with torch.no_grad():
        out, info = model.run_with_trace(video)
    peaks["forward"] = peak_mib()
    check_vis_output(
        out,
        num_frames=3,
        output_size=ORIGINAL_HW,
        num_classes=5,
        max_num=int(cfg.MODEL.MASK_FORMER.TEST.MAX_NUM),
        num_rows=len(info.refiner_ids),
    )
    print(
        f"\nViT-L fish-way: {params:,} parameters, {VITL_FISHWAY_ELEMENTS:,} state elements; "
        f"RSS before forward {before} MiB; peak RSS MiB per phase {peaks} "
        f"(per phase: {resettable}); {time.perf_counter() - start:.1f} s in all"
    )
    assert max(peaks.values()) < 6 * 1024  # two fp32 copies of the weights (1.45 GB each), plus slack
    if resettable and before is not None:
        assert peaks["forward"] - before < 512  # 3 frames at 64x107 on top of the loaded weights
