"""Config loading: defaults, official YAML files, _BASE_ chains, overrides, errors, our configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from fvcore.common.config import CfgNode

from dvis_attn_pl.config import (
    CONFIGS_DIR,
    ConfigError,
    available_configs,
    config_path,
    get_default_config,
    load_config,
)
from dvis_attn_pl.config.defaults import PROJECT_KEYS
from dvis_attn_pl.utils.errors import UserError
from tests.shared_data import SHARED, needs_shared

OFFICIAL = SHARED / "official_configs"
GOLDEN = SHARED / "golden"
DAQ = OFFICIAL / "dvis_plus_DVIS_DAQ" / "configs"
FISH_CAMERA = OFFICIAL / "fish-dvis" / "configs" / "DAQ_Fishway_config_camera.yaml"

needs_official = needs_shared(OFFICIAL, "official configs")
needs_golden = needs_shared(GOLDEN, "golden data")

# Upstream bug: these files name `_BASE_: ../MinVIS_R50_720p.yaml`, which exists only under VSPW/.
BROKEN_UPSTREAM = {"dvis_Plus/VIPSeg/vit_adapter/MinVIS_VitAdapterL.yaml"}

OFFICIAL_FILES = sorted(OFFICIAL.rglob("*.yaml")) if OFFICIAL.is_dir() else []
GOLDEN_CASES = ["r50_online_tiny", "r50_offline_tiny", "vitadapter_offline_tiny"]

# The override lists the golden cases were generated with (their READMEs), in order.
_TINY_COMMON = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64", "MODEL.SEM_SEG_HEAD.MASK_DIM", "64",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "2", "MODEL.MASK_FORMER.HIDDEN_DIM", "64",
    "MODEL.MASK_FORMER.NHEADS", "8", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "128",
    "MODEL.MASK_FORMER.DEC_LAYERS", "4", "MODEL.MASK_FORMER.REID_HIDDEN_DIM", "64",
    "MODEL.TRACKER.DECODER_LAYERS", "2", "INPUT.MIN_SIZE_TEST", "96",
]
_TINY_R50 = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10", "MODEL.VIDEO_HEAD.NUM_NEW_INS", "10",
]
GOLDEN_SOURCES = {
    "r50_online_tiny": (DAQ / "dvis_daq/ytvis19/DAQ_Online_R50.yaml", _TINY_COMMON + _TINY_R50),
    "r50_offline_tiny": (
        DAQ / "dvis_daq/ovis/DAQ_Offline_R50.yaml",
        _TINY_COMMON + _TINY_R50 + [
            "MODEL.REFINER.DECODER_LAYERS", "2", "MODEL.VIDEO_HEAD.USE_LOCAL_ATTN", "True",
            "MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM", "4",
        ],
    ),
    "vitadapter_offline_tiny": (
        FISH_CAMERA,
        _TINY_COMMON + [
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "20",
            "MODEL.VIDEO_HEAD.NUM_NEW_INS", "5", "MODEL.REFINER.DECODER_LAYERS", "2",
            "MODEL.VIT_ADAPTER.VIT_WEIGHT", "", "MODEL.VIT_ADAPTER.WITH_CP", "False",
            "OUTPUT_DIR", "./output_golden_tiny",
        ],
    ),
}

VITL = {
    "EMBED_DIM": 1024, "DEPTH": 24, "NUM_HEADS": 16, "DEFORM_NUM_HEADS": 16, "CONV_INPLANE": 64,
    "INTERACTION_INDEXES": [[0, 5], [6, 11], [12, 17], [18, 23]],
}


def flat(node, prefix: str = "") -> dict:
    """Dotted key -> value; tuples and lists compared as lists."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _plain(value)
    return out


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


# ---------------------------------------------------------------------------------------------
# defaults


def test_default_config_is_fresh_mutable_fvcore_node():
    a, b = get_default_config(), get_default_config()
    assert isinstance(a, CfgNode) and not a.is_frozen()
    a.MODEL.PIXEL_MEAN.append(0.0)
    a.INPUT.MIN_SIZE_TEST = 1
    assert b.MODEL.PIXEL_MEAN == [103.530, 116.280, 123.675] and b.INPUT.MIN_SIZE_TEST == 800
    assert "detectron2" not in sys.modules


def test_default_values_and_types_of_official_keys():
    cfg = get_default_config()
    # detectron2 get_cfg, overridden by add_dvis_config where both define a key
    assert cfg.SEED == 42 and cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.INPUT.MAX_SIZE_TEST == 1333
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,) and isinstance(cfg.SOLVER.STEPS, tuple)
    assert cfg.SOLVER.WARMUP_FACTOR == pytest.approx(0.001) and cfg.SOLVER.WEIGHT_DECAY_BIAS is None
    assert cfg.MODEL.RESNETS.STEM_TYPE == "deeplab" and cfg.MODEL.RESNETS.RES5_MULTI_GRID == [1, 2, 4]
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 6 and cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS == 12544
    assert cfg.MODEL.SWIN.QK_SCALE is None and cfg.MODEL.SWIN.DEPTHS == [2, 2, 6, 2]
    assert cfg.MODEL.VIT_ADAPTER.NAME == "vitl" and cfg.MODEL.VIT_ADAPTER.FINETUNE_INDEXES == [0]
    assert cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE == 3 and cfg.MODEL.TRACKER.NOISE_MODE == "none"
    assert cfg.MODEL.VIDEO_HEAD.NUM_NEW_INS == 10 and cfg.MODEL.VIDEO_HEAD.INFERENCE_SELECT_THRESHOLD == 0.1
    assert cfg.INPUT.USING_FRAME_NUM is None and cfg.MODEL.MASK_FORMER.REID_HIDDEN_DIM == 256
    # ours
    assert cfg.MODEL.COMPAT == "official" and cfg.INPUT.SAMPLING_FRAME_STRIDE == 1
    assert all(cfg.MODEL.VIT_ADAPTER[k] is None for k in VITL)


@needs_golden
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_default_keys_equal_the_official_key_set(case):
    dumped = flat(yaml.safe_load((GOLDEN / case / "config.yaml").read_text()))
    ours = flat(get_default_config())
    assert set(ours) - set(PROJECT_KEYS) == set(dumped) - set(PROJECT_KEYS)


# ---------------------------------------------------------------------------------------------
# official and golden files


@needs_official
def test_official_configs_are_there():
    """Without them the parametrised test below has no case at all (a silent skip): say so here."""
    assert len(OFFICIAL_FILES) > 0


@needs_official
@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=lambda p: str(p.relative_to(OFFICIAL)))
def test_every_official_yaml_loads(path):
    rel = str(path.relative_to(OFFICIAL))
    if any(rel.endswith(b) for b in BROKEN_UPSTREAM):
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert_one_line(err, str(path), "_BASE_", "MinVIS_R50_720p.yaml", "not found")
        return
    cfg = load_config(path)
    assert isinstance(cfg, CfgNode) and cfg.is_frozen()
    assert cfg.MODEL.VIT_ADAPTER.EMBED_DIM == 1024
    assert cfg.MODEL.COMPAT == ("fish-dvis" if "Fishway" in path.name else "official")


@needs_official
def test_official_values_arrive():
    cfg = load_config(DAQ / "dvis_daq/ytvis19/DAQ_Online_R50.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "DVIS_DAQ_online"
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10 and cfg.MODEL.VIDEO_HEAD.NUM_NEW_INS == 100
    assert cfg.INPUT.MIN_SIZE_TEST == 480 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 40
    assert cfg.SOLVER.STEPS == (112000,)  # "(112000,)" in the YAML is literal-evaluated
    assert cfg.DATASETS.TEST == ("ytvis_2019_val",)
    fish = load_config(FISH_CAMERA)
    assert fish.MODEL.BACKBONE.NAME == "D2VitAdapterDinoV2" and fish.MODEL.VIDEO_HEAD.NUM_NEW_INS == 10
    assert fish.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200 and fish.MODEL.MASK_FORMER.TEST.WINDOW_SIZE == 100
    assert fish.INPUT.MIN_SIZE_TRAIN == (240,) and fish.MODEL.COMPAT == "fish-dvis"


@needs_golden
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_dump_loads_and_equals_its_source_plus_overrides(case):
    golden = load_config(GOLDEN / case / "config.yaml")
    raw = flat(yaml.safe_load((GOLDEN / case / "config.yaml").read_text()))
    source, overrides = GOLDEN_SOURCES[case]
    rebuilt = flat(load_config(source, overrides))
    # every official key: the official setup's values, reproduced from the official file
    assert {k: rebuilt[k] for k in raw} == raw
    assert flat(golden) == rebuilt
    assert golden.MODEL.COMPAT == ("fish-dvis" if case.startswith("vit") else "official")


# ---------------------------------------------------------------------------------------------
# _BASE_ chains and overrides


def test_base_chain_order_relative_paths_and_overrides(tmp_path):
    write(tmp_path / "root.yaml", "MODEL:\n  SEM_SEG_HEAD:\n    NUM_CLASSES: 1\n    CONVS_DIM: 1\n"
          "INPUT:\n  MIN_SIZE_TEST: 1\nOUTPUT_DIR: root\n")
    write(tmp_path / "mid" / "mid.yaml", "_BASE_: ../root.yaml\nMODEL:\n  SEM_SEG_HEAD:\n    CONVS_DIM: 2\n"
          "INPUT:\n  MIN_SIZE_TEST: 2\n")
    leaf = write(tmp_path / "mid" / "leaf" / "leaf.yaml", "_BASE_: ../mid.yaml\nINPUT:\n  MIN_SIZE_TEST: 3\n")
    cfg = load_config(leaf, ["OUTPUT_DIR", "over"])
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1  # only in root
    assert cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM == 2  # mid over root
    assert cfg.INPUT.MIN_SIZE_TEST == 3  # leaf over mid
    assert cfg.OUTPUT_DIR == "over"  # overrides last
    assert cfg.MODEL.SEM_SEG_HEAD.MASK_DIM == 256  # untouched default


def test_base_list_later_base_wins(tmp_path):
    write(tmp_path / "a.yaml", "SEED: 1\nOUTPUT_DIR: a\n")
    write(tmp_path / "b.yaml", "SEED: 2\n")
    cfg = load_config(write(tmp_path / "c.yaml", "_BASE_: [a.yaml, b.yaml]\n"))
    assert (cfg.SEED, cfg.OUTPUT_DIR) == (2, "a")


def test_types_checked_against_merged_value_not_each_file(tmp_path):
    # As detectron2: the files are merged first, then type-checked against the default (None here).
    write(tmp_path / "a.yaml", "MODEL:\n  SWIN:\n    QK_SCALE: 0.5\n")
    cfg = load_config(write(tmp_path / "b.yaml", "_BASE_: a.yaml\nMODEL:\n  SWIN:\n    QK_SCALE: 1\n"))
    assert cfg.MODEL.SWIN.QK_SCALE == 1


def test_overrides_are_parsed_and_typed(tmp_path):
    path = write(tmp_path / "c.yaml", "")
    cfg = load_config(path, [
        "MODEL.WEIGHTS", "x.pth",
        "INPUT.MIN_SIZE_TEST", "360",
        "MODEL.PIXEL_MEAN", "[1.0, 2.0, 3.0]",
        "INPUT.MIN_SIZE_TRAIN", "[240, 320]",  # list -> tuple (the default is a tuple)
        "SOLVER.STEPS", "(10,)",
        "MODEL.VIDEO_HEAD.USE_LOCAL_ATTN", "True",
        "MODEL.SWIN.QK_SCALE", "0.5",  # default None accepts any plain type
        "SOLVER.WEIGHT_DECAY_BIAS", "None",
        "MODEL.DEVICE", "cpu",
    ])
    assert cfg.MODEL.WEIGHTS == "x.pth" and cfg.INPUT.MIN_SIZE_TEST == 360
    assert cfg.MODEL.PIXEL_MEAN == [1.0, 2.0, 3.0] and cfg.INPUT.MIN_SIZE_TRAIN == (240, 320)
    assert cfg.SOLVER.STEPS == (10,) and cfg.MODEL.VIDEO_HEAD.USE_LOCAL_ATTN is True
    assert cfg.MODEL.SWIN.QK_SCALE == 0.5 and cfg.SOLVER.WEIGHT_DECAY_BIAS is None
    assert cfg.MODEL.DEVICE == "cpu"
    assert load_config(path, ["INPUT.MIN_SIZE_TEST", 300]).INPUT.MIN_SIZE_TEST == 300  # non-str as is


def test_frozen_unless_asked(tmp_path):
    path = write(tmp_path / "c.yaml", "SEED: 3\n")
    cfg = load_config(path)
    with pytest.raises(AttributeError):
        cfg.SEED = 4
    mutable = load_config(path, freeze=False)
    mutable.SEED = 4
    assert mutable.SEED == 4


# ---------------------------------------------------------------------------------------------
# one-line errors


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path / "bad.yaml", "MODEL:\n  VIDEO_HEAD:\n    NUM_NEW_INSS: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = assert_one_line(err, str(path), "MODEL.VIDEO_HEAD.NUM_NEW_INSS", "unknown config key")
    assert "MODEL.VIDEO_HEAD.NUM_NEW_INS?" in msg  # the suggestion
    assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)
    assert err.value.key == "MODEL.VIDEO_HEAD.NUM_NEW_INSS" and err.value.path == str(path)


def test_unknown_key_in_a_base_names_the_base(tmp_path):
    base = write(tmp_path / "base.yaml", "FOO: 1\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSEED: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert_one_line(err, str(base), "FOO", "unknown")


def test_unknown_override_key(tmp_path):
    path = write(tmp_path / "c.yaml", "")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["MODEL.NOPE.X", "1"])
    assert_one_line(err, "overrides", str(path), "MODEL.NOPE.X", "unknown config key")


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("INPUT:\n  MIN_SIZE_TEST: 0.5\n", "INPUT.MIN_SIZE_TEST", ["expects int", "float"]),
        ("MODEL:\n  VIDEO_HEAD:\n    INFERENCE_SELECT_THRESHOLD: 1\n", "INFERENCE_SELECT_THRESHOLD", ["float", "int"]),
        ("MODEL: 3\n", "MODEL", ["group of keys"]),
        ("SEED:\n  A: 1\n", "SEED", ["mapping"]),
        ("MODEL:\n  PIXEL_MEAN: abc\n", "MODEL.PIXEL_MEAN", ["expects list", "str"]),
    ],
)
def test_bad_types(tmp_path, text, key, words):
    path = write(tmp_path / "t.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert_one_line(err, str(path), key, *words)


def test_bad_override_value_and_odd_tokens(tmp_path):
    path = write(tmp_path / "c.yaml", "")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["INPUT.MIN_SIZE_TEST", "big"])
    assert_one_line(err, "INPUT.MIN_SIZE_TEST", "expects int", "'big'")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["INPUT.MIN_SIZE_TEST", "360", "MODEL.WEIGHTS"])
    assert_one_line(err, "odd number", "3")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["MODEL.RESNETS", "1"])
    assert_one_line(err, "MODEL.RESNETS", "group of keys")


def test_yaml_syntax_error_missing_file_and_non_mapping(tmp_path):
    bad = write(tmp_path / "syntax.yaml", "MODEL:\n  A: [1, 2\n  B: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert_one_line(err, str(bad), "YAML syntax error", "line")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "absent.yaml")
    assert_one_line(err, "absent.yaml", "no such file")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert_one_line(err, "list.yaml", "mapping")


def test_missing_base_and_cycles(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: gone/base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert_one_line(err, str(child), "_BASE_", "base.yaml", "not found")
    a = write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "b.yaml", "_BASE_: sub/../a.yaml\n")  # the same file under another spelling
    with pytest.raises(ConfigError) as err:
        load_config(a)
    assert_one_line(err, "_BASE_ cycle", "a.yaml -> ", "b.yaml")
    me = write(tmp_path / "me.yaml", "_BASE_: me.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(me)
    assert_one_line(err, "cycle")


# ---------------------------------------------------------------------------------------------
# derived values: ViT-Adapter sizes, MODEL.COMPAT


VIT = "MODEL:\n  BACKBONE:\n    NAME: D2VitAdapterDinoV2\n  VIT_ADAPTER:\n    NAME: {name}\n"


def test_vit_sizes_follow_name(tmp_path):
    vitl = load_config(write(tmp_path / "l.yaml", VIT.format(name="vitl"))).MODEL.VIT_ADAPTER
    assert {k: vitl[k] for k in VITL} == VITL
    vitb = load_config(write(tmp_path / "b.yaml", VIT.format(name="vitb"))).MODEL.VIT_ADAPTER
    assert (vitb.EMBED_DIM, vitb.DEPTH, vitb.NUM_HEADS, vitb.DEFORM_NUM_HEADS) == (768, 12, 12, 12)
    assert vitb.INTERACTION_INDEXES == [[0, 2], [3, 5], [6, 8], [9, 11]]


def test_vit_explicit_sizes_win(tmp_path):
    path = write(tmp_path / "l.yaml", VIT.format(name="vitl"))
    tiny = [
        "MODEL.VIT_ADAPTER.EMBED_DIM", "64", "MODEL.VIT_ADAPTER.DEPTH", "4", "MODEL.VIT_ADAPTER.NUM_HEADS", "4",
        "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", "4", "MODEL.VIT_ADAPTER.CONV_INPLANE", "16",
        "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", "[[0, 0], [1, 1], [2, 2], [3, 3]]",
    ]
    vit = load_config(path, tiny).MODEL.VIT_ADAPTER
    assert (vit.EMBED_DIM, vit.DEPTH, vit.CONV_INPLANE) == (64, 4, 16)
    assert vit.INTERACTION_INDEXES == [[0, 0], [1, 1], [2, 2], [3, 3]]
    partial = load_config(path, ["MODEL.VIT_ADAPTER.DEPTH", "24", "MODEL.VIT_ADAPTER.CONV_INPLANE", "32"])
    assert (partial.MODEL.VIT_ADAPTER.CONV_INPLANE, partial.MODEL.VIT_ADAPTER.EMBED_DIM) == (32, 1024)


def test_vit_sizes_errors(tmp_path):
    vits = write(tmp_path / "s.yaml", VIT.format(name="vits"))
    with pytest.raises(ConfigError) as err:
        load_config(vits)
    assert_one_line(err, "MODEL.VIT_ADAPTER.NAME", "'vits'", "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS")
    ok = load_config(vits, ["MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", "6", "MODEL.VIT_ADAPTER.CONV_INPLANE", "64",
                            "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", "[[0, 2], [3, 5], [6, 8], [9, 11]]"])
    assert (ok.MODEL.VIT_ADAPTER.EMBED_DIM, ok.MODEL.VIT_ADAPTER.NUM_HEADS) == (384, 6)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "x.yaml", VIT.format(name="vitx")))
    assert_one_line(err, "unknown ViT 'vitx'", "vitl")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "l.yaml", VIT.format(name="vitl")),
                    ["MODEL.VIT_ADAPTER.INTERACTION_INDEXES", "[[0, 5], [6, 30]]"])
    assert_one_line(err, "INTERACTION_INDEXES", "DEPTH 24")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "l.yaml", ["MODEL.VIT_ADAPTER.NUM_HEADS", "7"])
    assert_one_line(err, "MODEL.VIT_ADAPTER.NUM_HEADS", "does not divide")
    # a non-ViT backbone never needs the sizes
    assert load_config(write(tmp_path / "r.yaml", "MODEL:\n  VIT_ADAPTER:\n    NAME: vits\n"))


def test_compat_detection_and_validation(tmp_path):
    fork = write(tmp_path / "fork.yaml", "INPUT:\n  SAMPLING_FRAME_STRIDE: 2\n")
    assert load_config(fork).MODEL.COMPAT == "fish-dvis"
    assert load_config(fork, ["MODEL.COMPAT", "official"]).MODEL.COMPAT == "official"
    plain = write(tmp_path / "plain.yaml", "SEED: 1\n")
    assert load_config(plain).MODEL.COMPAT == "official"
    # an override of the stride alone does not say anything about the file's origin
    assert load_config(plain, ["INPUT.SAMPLING_FRAME_STRIDE", "2"]).MODEL.COMPAT == "official"
    with pytest.raises(ConfigError) as err:
        load_config(plain, ["MODEL.COMPAT", "fish"])
    assert_one_line(err, "MODEL.COMPAT", "official, fish-dvis")


# ---------------------------------------------------------------------------------------------
# our configs


def test_bundled_configs_listed_and_commented():
    names = available_configs()
    assert set(names) >= {
        "dvis_daq_r50_online_ytvis19", "dvis_daq_r50_online_ytvis21", "dvis_daq_r50_offline_ytvis19",
        "dvis_daq_vitl_offline_fishway", "tiny_cpu",
    }
    for path in CONFIGS_DIR.glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, path
        assert load_config(path).is_frozen()


def test_config_path():
    assert config_path("tiny_cpu") == CONFIGS_DIR / "tiny_cpu.yaml"
    assert config_path("tiny_cpu.yaml") == CONFIGS_DIR / "tiny_cpu.yaml"
    with pytest.raises(ConfigError) as err:
        config_path("tiny_gpu")
    assert_one_line(err, "'tiny_gpu'", "available", "tiny_cpu", "dvis_daq_r50_online_ytvis19")


def _diff(ours: str, official: Path) -> dict:
    a, b = flat(load_config(config_path(ours))), flat(load_config(official))
    return {k: (b[k], a[k]) for k in a if a[k] != b[k]}


@needs_official
def test_our_online_configs_equal_official():
    assert _diff("dvis_daq_r50_online_ytvis19", DAQ / "dvis_daq/ytvis19/DAQ_Online_R50.yaml") == {}
    assert _diff("dvis_daq_r50_online_ytvis21", DAQ / "dvis_daq/ytvis21/DAQ_Online_R50.yaml") == {}


@needs_official
def test_our_offline_r50_is_the_ovis_recipe_on_ytvis():
    diff = _diff("dvis_daq_r50_offline_ytvis19", DAQ / "dvis_daq/ovis/DAQ_Offline_R50.yaml")
    assert set(diff) == {
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "MODEL.VIDEO_HEAD.OVIS_INFER", "DATASETS.TRAIN", "DATASETS.TEST", "OUTPUT_DIR",
    }
    assert diff["MODEL.SEM_SEG_HEAD.NUM_CLASSES"] == (25, 40)


@needs_official
def test_our_fishway_config_equals_fish_dvis():
    diff = _diff("dvis_daq_vitl_offline_fishway", FISH_CAMERA)
    assert set(diff) == {"MODEL.VIT_ADAPTER.VIT_WEIGHT", "DATASETS.TRAIN", "DATASETS.TEST", "OUTPUT_DIR"}
    cfg = load_config(config_path("dvis_daq_vitl_offline_fishway"))
    assert cfg.MODEL.COMPAT == "fish-dvis" and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 5
    assert cfg.MODEL.VIT_ADAPTER.EMBED_DIM == 1024


def test_tiny_cpu_values():
    cfg = load_config(config_path("tiny_cpu"))
    m = cfg.MODEL
    assert m.META_ARCHITECTURE == "DVIS_DAQ_offline" and m.BACKBONE.NAME == "build_resnet_backbone"
    assert (m.MASK_FORMER.HIDDEN_DIM, m.SEM_SEG_HEAD.CONVS_DIM, m.SEM_SEG_HEAD.MASK_DIM) == (64, 64, 64)
    assert (m.RESNETS.DEPTH, m.RESNETS.STEM_OUT_CHANNELS, m.RESNETS.WIDTH_PER_GROUP, m.RESNETS.RES2_OUT_CHANNELS) == (
        50, 16, 8, 32)
    assert (m.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS, m.MASK_FORMER.DEC_LAYERS) == (2, 4)
    assert (m.TRACKER.DECODER_LAYERS, m.REFINER.DECODER_LAYERS) == (2, 2)
    assert m.MASK_FORMER.NUM_OBJECT_QUERIES == m.VIDEO_HEAD.NUM_NEW_INS == 10
    assert m.SEM_SEG_HEAD.NUM_CLASSES == 5 and cfg.INPUT.MIN_SIZE_TEST == 160
    assert m.VIDEO_HEAD.USE_LOCAL_ATTN is True and m.VIDEO_HEAD.OFFLINE_TOPK_NUM == 10
    assert m.MASK_FORMER.TEST.MAX_NUM == 10 and m.COMPAT == "official" and m.WEIGHTS == ""


def test_public_api_reexport():
    import dvis_attn_pl

    assert dvis_attn_pl.load_config is load_config
