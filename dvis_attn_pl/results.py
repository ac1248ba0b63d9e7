"""Model outputs -> YTVIS result records (one compressed RLE per frame), as the official evaluator writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils


def encode_video_mask(masks: torch.Tensor | np.ndarray) -> list[dict]:
    """Encode a (T, H, W) binary mask into T compressed RLEs (``counts`` as str), in one call."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().to("cpu", torch.uint8).numpy()
    masks = np.asfortranarray(np.ascontiguousarray(masks, dtype=np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(masks)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return list(rles)


def to_ytvis_records(
    outputs: Mapping, video_id: int, contiguous_to_dataset_id: Sequence[int] | None = None
) -> list[dict]:
    """Turn one video's model output dict into YTVIS result records.

    ``category_id`` is the dataset's id when ``contiguous_to_dataset_id`` is given (what
    ``results.json`` holds), otherwise the contiguous label (what the official
    ``instances_to_coco_json_video`` returns before the evaluator maps it).
    """
    records = []
    for score, label, masks in zip(outputs["pred_scores"], outputs["pred_labels"], outputs["pred_masks"]):
        label = int(label)
        category = int(contiguous_to_dataset_id[label]) if contiguous_to_dataset_id is not None else label
        records.append(
            {
                "video_id": video_id,
                "score": float(score),
                "category_id": category,
                "segmentations": encode_video_mask(masks),
            }
        )
    return records
