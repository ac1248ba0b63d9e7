"""Default configuration: every key the official DVIS-DAQ setup defines, plus ours.

The official ``train_net_video.py::setup`` starts from detectron2's ``get_cfg()`` and then calls
``add_deeplab_config``, ``add_maskformer2_config``, ``add_maskformer2_video_config``,
``add_minvis_config``, ``add_dvis_config``, ``add_ctvis_config`` and ``add_daq_config`` in that
order. The tables below hold the resulting keys and default values (later tables win where a key
appears twice, as in the official order). Values keep the official Python types (tuple vs list,
int vs float) because merging type-checks against them, as detectron2 does.

Our additions (``PROJECT_KEYS``):

- ``MODEL.COMPAT``: ``"official"`` (DVIS-DAQ at c0eb249) or ``"fish-dvis"`` (the fork's evaluation
  behaviour: configurable segmenter window, tracker ``forward_offline_mode``, new-instance cap).
- ``INPUT.SAMPLING_FRAME_STRIDE``: defined by the fish-dvis fork's ``add_daq_config`` (training only).
- ``MODEL.VIT_ADAPTER.{EMBED_DIM, DEPTH, NUM_HEADS, DEFORM_NUM_HEADS, CONV_INPLANE,
  INTERACTION_INDEXES}``: the ViT-Adapter sizes the official code hard-codes per
  ``MODEL.VIT_ADAPTER.NAME``. They default to ``None`` here and are filled from ``VIT_PRESETS`` by
  ``loader.resolve_derived`` after merging, unless a config sets them (the tiny test models do).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from fvcore.common.config import CfgNode

__all__ = [
    "COMPAT_CHOICES",
    "OFFICIAL_TABLES",
    "PROJECT_KEYS",
    "VIT_ADAPTER_BACKBONE",
    "VIT_PRESETS",
    "VIT_SIZE_KEYS",
    "get_default_config",
]

# detectron2 ``get_cfg()`` (detectron2/config/defaults.py).
_DETECTRON2: dict[str, Any] = {
    "VERSION": 2,
    "MODEL.LOAD_PROPOSALS": False,
    "MODEL.MASK_ON": False,
    "MODEL.KEYPOINT_ON": False,
    "MODEL.DEVICE": "cuda",
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.WEIGHTS": "",
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "INPUT.MIN_SIZE_TRAIN": (800,),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.CROP.ENABLED": False,
    "INPUT.CROP.TYPE": "relative_range",
    "INPUT.CROP.SIZE": [0.9, 0.9],
    "INPUT.FORMAT": "BGR",
    "INPUT.MASK_FORMAT": "polygon",
    "DATASETS.TRAIN": (),
    "DATASETS.PROPOSAL_FILES_TRAIN": (),
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": 2000,
    "DATASETS.TEST": (),
    "DATASETS.PROPOSAL_FILES_TEST": (),
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": 1000,
    "DATALOADER.NUM_WORKERS": 4,
    "DATALOADER.ASPECT_RATIO_GROUPING": True,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
    "DATALOADER.REPEAT_THRESHOLD": 0.0,
    "DATALOADER.REPEAT_SQRT": True,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.FPN.IN_FEATURES": [],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    "MODEL.PROPOSAL_GENERATOR.NAME": "RPN",
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": 0,
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.ANCHOR_GENERATOR.ANGLES": [[-90, 0, 90]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RPN.HEAD_NAME": "StandardRPNHead",
    "MODEL.RPN.IN_FEATURES": ["res4"],
    "MODEL.RPN.BOUNDARY_THRESH": -1,
    "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7],
    "MODEL.RPN.IOU_LABELS": [0, -1, 1],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256,
    "MODEL.RPN.POSITIVE_FRACTION": 0.5,
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": 1.0,
    "MODEL.RPN.BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0),
    "MODEL.RPN.SMOOTH_L1_BETA": 0.0,
    "MODEL.RPN.LOSS_WEIGHT": 1.0,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 12000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.RPN.CONV_DIMS": [-1],
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeads",
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.ROI_HEADS.IN_FEATURES": ["res4"],
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.5],
    "MODEL.ROI_HEADS.IOU_LABELS": [0, 1],
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.25,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5,
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": True,
    "MODEL.ROI_BOX_HEAD.NAME": "",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": 1.0,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 0,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.CONV_DIM": 256,
    "MODEL.ROI_BOX_HEAD.NORM": "",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False,
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": False,
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": False,
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": False,
    "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER": 0.5,
    "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES": 50,
    "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": (
        (10.0, 10.0, 5.0, 5.0),
        (20.0, 20.0, 10.0, 10.0),
        (30.0, 30.0, 15.0, 15.0),
    ),
    "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": (0.5, 0.6, 0.7),
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 0,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "MODEL.ROI_MASK_HEAD.NORM": "",
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_KEYPOINT_HEAD.NAME": "KRCNNConvDeconvUpsampleHead",
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": (512,) * 8,
    "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS": 17,
    "MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE": 1,
    "MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS": True,
    "MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT": 1.0,
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.SEM_SEG_HEAD.NAME": "SemSegFPNHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 54,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 128,
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 4,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 1.0,
    "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT": 1.0,
    "MODEL.PANOPTIC_FPN.COMBINE.ENABLED": True,
    "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH": 0.5,
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 4096,
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": 0.5,
    "MODEL.RETINANET.NUM_CLASSES": 80,
    "MODEL.RETINANET.IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"],
    "MODEL.RETINANET.NUM_CONVS": 4,
    "MODEL.RETINANET.IOU_THRESHOLDS": [0.4, 0.5],
    "MODEL.RETINANET.IOU_LABELS": [0, -1, 1],
    "MODEL.RETINANET.PRIOR_PROB": 0.01,
    "MODEL.RETINANET.SCORE_THRESH_TEST": 0.05,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 1000,
    "MODEL.RETINANET.NMS_THRESH_TEST": 0.5,
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0),
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": 2.0,
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": 0.25,
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.1,
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RETINANET.NORM": "",
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.OUT_FEATURES": ["res4"],
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.RESNETS.DEFORM_MODULATED": False,
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": 1,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
    "SOLVER.MAX_ITER": 40000,
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.BASE_LR_END": 0.0,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.NESTEROV": False,
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.GAMMA": 0.1,
    "SOLVER.STEPS": (30000,),
    "SOLVER.NUM_DECAYS": 3,
    "SOLVER.WARMUP_FACTOR": 0.001,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.RESCALE_INTERVAL": False,
    "SOLVER.CHECKPOINT_PERIOD": 5000,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.REFERENCE_WORLD_SIZE": 0,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.WEIGHT_DECAY_BIAS": None,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "value",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    "SOLVER.AMP.ENABLED": False,
    "TEST.EXPECTED_RESULTS": [],
    "TEST.EVAL_PERIOD": 0,
    "TEST.KEYPOINT_OKS_SIGMAS": [],
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "TEST.AUG.ENABLED": False,
    "TEST.AUG.MIN_SIZES": (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
    "TEST.AUG.MAX_SIZE": 4000,
    "TEST.AUG.FLIP": True,
    "TEST.PRECISE_BN.ENABLED": False,
    "TEST.PRECISE_BN.NUM_ITER": 200,
    "OUTPUT_DIR": "./output",
    "SEED": -1,
    "CUDNN_BENCHMARK": False,
    "FLOAT32_PRECISION": "",
    "VIS_PERIOD": 0,
    "GLOBAL.HACK": 1.0,
}

# detectron2.projects.deeplab ``add_deeplab_config``.
_DEEPLAB: dict[str, Any] = {
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": "hard_pixel_mining",
    "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES": ["res2"],
    "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS": [48],
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 256,
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [6, 12, 18],
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": 0.1,
    "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV": False,
    "MODEL.RESNETS.RES4_DILATION": 1,
    "MODEL.RESNETS.RES5_MULTI_GRID": [1, 2, 4],
    "MODEL.RESNETS.STEM_TYPE": "deeplab",
}

# mask2former ``add_maskformer2_config`` (incl. the Swin and DINOv2 ViT-Adapter backbones).
_MASKFORMER2: dict[str, Any] = {
    "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
    "INPUT.COLOR_AUG_SSD": False,
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "INPUT.SIZE_DIVISIBILITY": -1,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
    "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.MASK_WEIGHT": 20.0,
    "MODEL.MASK_FORMER.NHEADS": 8,
    "MODEL.MASK_FORMER.DROPOUT": 0.1,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048,
    "MODEL.MASK_FORMER.ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.DEC_LAYERS": 6,
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100,
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": False,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False,
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
    "MODEL.SWIN.PRETRAIN_IMG_SIZE": 224,
    "MODEL.SWIN.PATCH_SIZE": 4,
    "MODEL.SWIN.EMBED_DIM": 96,
    "MODEL.SWIN.DEPTHS": [2, 2, 6, 2],
    "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
    "MODEL.SWIN.WINDOW_SIZE": 7,
    "MODEL.SWIN.MLP_RATIO": 4.0,
    "MODEL.SWIN.QKV_BIAS": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.DROP_RATE": 0.0,
    "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
    "MODEL.SWIN.DROP_PATH_RATE": 0.3,
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SWIN.USE_CHECKPOINT": False,
    "MODEL.VIT_ADAPTER.NAME": "vitl",
    "MODEL.VIT_ADAPTER.VIT_WEIGHT": "dinov2_vitl14_pretrain.pth",
    "MODEL.VIT_ADAPTER.FREEZE_VIT": True,
    "MODEL.VIT_ADAPTER.FINETUNE": False,
    "MODEL.VIT_ADAPTER.FINETUNE_INDEXES": [0],
    "MODEL.VIT_ADAPTER.WITH_CP": True,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1,
    "INPUT.MAX_SCALE": 2.0,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 112 * 112,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
}

# mask2former_video ``add_maskformer2_video_config``.
_MASKFORMER2_VIDEO: dict[str, Any] = {
    "INPUT.SAMPLING_FRAME_NUM": 2,
    "INPUT.SAMPLING_FRAME_RANGE": 20,
    "INPUT.SAMPLING_FRAME_SHUFFLE": False,
    "INPUT.AUGMENTATIONS": [],
}

# dvis_Plus ``add_minvis_config``.
_MINVIS: dict[str, Any] = {
    "INPUT.SAMPLING_FRAME_RATIO": 1.0,
    "MODEL.MASK_FORMER.TEST.WINDOW_INFERENCE": False,
    "MODEL.MASK_FORMER.REID_BRANCH": True,
}

# dvis_Plus ``add_dvis_config``.
_DVIS: dict[str, Any] = {
    "INPUT.REVERSE_AGU": False,
    "MODEL.SEM_SEG_HEAD.RETURN_TRANSFORMER_FEATURE": False,
    "MODEL.TRACKER.DECODER_LAYERS": 6,
    "MODEL.TRACKER.NOISE_MODE": "none",
    "MODEL.TRACKER.NOISE_RATIO": 0.5,
    "MODEL.TRACKER.USE_CL": True,
    "MODEL.REFINER.DECODER_LAYERS": 6,
    "MODEL.REFINER.USE_CL": True,
    "MODEL.MASK_FORMER.TEST.WINDOW_SIZE": 3,
    "MODEL.MASK_FORMER.TEST.TASK": "vis",
    "MODEL.MASK_FORMER.TEST.MAX_NUM": 20,
    "DATASETS.DATASET_RATIO": [1.0],
    "DATASETS.DATASET_NEED_MAP": [False],
    "DATASETS.DATASET_TYPE": ["video_instance"],
    "DATASETS.DATASET_TYPE_TEST": ["video_instance"],
    "INPUT.PSEUDO.AUGMENTATIONS": ["rotation"],
    "INPUT.PSEUDO.MIN_SIZE_TRAIN": (480, 512, 544, 576, 608, 640, 672, 704, 736, 768),
    "INPUT.PSEUDO.MAX_SIZE_TRAIN": 768,
    "INPUT.PSEUDO.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",
    "INPUT.PSEUDO.CROP.ENABLED": False,
    "INPUT.PSEUDO.CROP.TYPE": "absolute_range",
    "INPUT.PSEUDO.CROP.SIZE": (384, 600),
    "INPUT.LSJ_AUG.ENABLED": False,
    "INPUT.LSJ_AUG.IMAGE_SIZE": 1024,
    "INPUT.LSJ_AUG.MIN_SCALE": 0.1,
    "INPUT.LSJ_AUG.MAX_SCALE": 2.0,
    "SEED": 42,
    "DATALOADER.NUM_WORKERS": 4,
    "MODEL.CL_PLUGIN.CL_PLUGIN_NAME": "CTCLPlugin",
    "MODEL.CL_PLUGIN.REID_WEIGHT": 2.0,
    "MODEL.CL_PLUGIN.AUX_REID_WEIGHT": 3.0,
    "MODEL.CL_PLUGIN.NUM_NEGATIVES": 99,
    "MODEL.CL_PLUGIN.FUSION_LOSS": False,
    "MODEL.CL_PLUGIN.BIO_CL": False,
    "MODEL.CL_PLUGIN.ONE_DIRECTION": True,
    "MODEL.CL_PLUGIN.MOMENTUM_EMBED": True,
    "MODEL.CL_PLUGIN.NOISE_EMBED": False,
}

# dvis_Plus ``add_ctvis_config``.
_CTVIS: dict[str, Any] = {
    "MODEL.MASK_FORMER.REID_HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NUM_REID_HEAD_LAYERS": 3,
}

# dvis_daq ``add_daq_config``.
_DAQ: dict[str, Any] = {
    "MODEL.VIDEO_HEAD.NUM_NEW_INS": 10,
    "MODEL.VIDEO_HEAD.NUM_SLOTS": 5,
    "MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM": 20,
    "MODEL.VIDEO_HEAD.TRAINING_SELECT_THRESHOLD": 0.1,
    "MODEL.VIDEO_HEAD.USING_THR": False,
    "MODEL.VIDEO_HEAD.SKIP_PARAMS": [],
    "INPUT.USING_FRAME_NUM": None,
    "INPUT.STEPS": None,
    "MODEL.VIDEO_HEAD.CL_ON_SLOTS": False,
    "MODEL.VIDEO_HEAD.INFERENCE_SELECT_THRESHOLD": 0.1,
    "MODEL.VIDEO_HEAD.AUX_INFERENCE_SELECT_THRESHOLD": 0.01,
    "MODEL.VIDEO_HEAD.NOISE_FRAME_NUM": 1,
    "MODEL.VIDEO_HEAD.TEMPORAL_SCORE_TYPE": "mean",
    "MODEL.VIDEO_HEAD.DIS_FG_THRESHOLD": 0.01,
    "MODEL.VIDEO_HEAD.MASK_NMS_THR": 0.6,
    "MODEL.VIDEO_HEAD.OVIS_INFER": False,
    "MODEL.VIDEO_HEAD.USE_LOCAL_ATTN": False,
}

#: The official tables in the order ``setup()`` applies them (name, table).
OFFICIAL_TABLES: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("detectron2.get_cfg", _DETECTRON2),
    ("add_deeplab_config", _DEEPLAB),
    ("add_maskformer2_config", _MASKFORMER2),
    ("add_maskformer2_video_config", _MASKFORMER2_VIDEO),
    ("add_minvis_config", _MINVIS),
    ("add_dvis_config", _DVIS),
    ("add_ctvis_config", _CTVIS),
    ("add_daq_config", _DAQ),
)

#: Names ``MODEL.COMPAT`` accepts.
COMPAT_CHOICES: tuple[str, ...] = ("official", "fish-dvis")

#: ``MODEL.BACKBONE.NAME`` of the DINOv2 ViT-Adapter backbone.
VIT_ADAPTER_BACKBONE = "D2VitAdapterDinoV2"

#: The size keys under ``MODEL.VIT_ADAPTER`` that ``VIT_PRESETS`` fills.
VIT_SIZE_KEYS: tuple[str, ...] = (
    "EMBED_DIM",
    "DEPTH",
    "NUM_HEADS",
    "DEFORM_NUM_HEADS",
    "CONV_INPLANE",
    "INTERACTION_INDEXES",
)

#: Sizes per ``MODEL.VIT_ADAPTER.NAME``, from the official ``backbones_vitAdapter`` code: the DINOv2
#: ViT sizes (``vit_small/base/large/giant2``) and the adapter arguments (``get_adapter_args``, which
#: defines them only for 'vitl' and 'vitb'; 'vits' and 'vitg' need the adapter keys set explicitly).
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vits": {"EMBED_DIM": 384, "DEPTH": 12, "NUM_HEADS": 6},
    "vitb": {
        "EMBED_DIM": 768,
        "DEPTH": 12,
        "NUM_HEADS": 12,
        "DEFORM_NUM_HEADS": 12,
        "CONV_INPLANE": 64,
        "INTERACTION_INDEXES": [[0, 2], [3, 5], [6, 8], [9, 11]],
    },
    "vitl": {
        "EMBED_DIM": 1024,
        "DEPTH": 24,
        "NUM_HEADS": 16,
        "DEFORM_NUM_HEADS": 16,
        "CONV_INPLANE": 64,
        "INTERACTION_INDEXES": [[0, 5], [6, 11], [12, 17], [18, 23]],
    },
    "vitg": {"EMBED_DIM": 1536, "DEPTH": 40, "NUM_HEADS": 24},
}

#: Keys this project adds to the official set, with their defaults.
PROJECT_KEYS: dict[str, Any] = {
    "MODEL.COMPAT": "official",
    "INPUT.SAMPLING_FRAME_STRIDE": 1,
    **{f"MODEL.VIT_ADAPTER.{key}": None for key in VIT_SIZE_KEYS},
}


def _assign(root: CfgNode, dotted: str, value: Any) -> None:
    """Set ``root[a][b]...[z] = value`` for ``dotted = "a.b...z"``, creating nodes on the way."""
    *parents, leaf = dotted.split(".")
    node = root
    for name in parents:
        if name not in node:
            node[name] = CfgNode()
        node = node[name]
    node[leaf] = copy.deepcopy(value)


def _fill(root: CfgNode, tables: Iterable[Mapping[str, Any]]) -> CfgNode:
    for table in tables:
        for dotted, value in table.items():
            _assign(root, dotted, value)
    return root


def get_default_config() -> CfgNode:
    """A fresh, mutable fvcore ``CfgNode`` with every official key and ours, at their defaults.

    Equivalent to the official ``get_cfg()`` followed by the seven ``add_*_config`` calls, plus
    ``PROJECT_KEYS``. The ViT-Adapter size keys are ``None`` here; ``load_config`` resolves them.
    """
    return _fill(CfgNode(), [table for _, table in OFFICIAL_TABLES] + [PROJECT_KEYS])
