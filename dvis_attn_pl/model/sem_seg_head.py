"""``MaskFormerHead`` (``sem_seg_head``): the pixel decoder followed by the transformer decoder.

The pixel decoder turns the backbone's ``res2..res5`` into mask features (stride 4) and a
three-level pyramid (strides 32, 16, 8); the transformer decoder (``predictor``) reads that pyramid
(``MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder"``, the only input the
DVIS-DAQ configs use) and the mask features, and returns the per-frame predictions.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils.errors import UserError
from .backbone.base import ShapeSpec
from .pixel_decoder.msdeform_pixel_decoder import MSDeformAttnPixelDecoder
from .video_decoder import TRANSFORMER_DECODERS

PIXEL_DECODERS = {"MSDeformAttnPixelDecoder": MSDeformAttnPixelDecoder}
SUPPORTED_IN_FEATURE = "multi_scale_pixel_decoder"


def _check_choice(key: str, value: str, supported) -> None:
    if value not in supported:
        raise UserError(f"{key} {value!r} is not supported; use one of {', '.join(sorted(supported))}")


class MaskFormerHead(nn.Module):
    """``pixel_decoder`` + ``predictor`` with the official state-dict keys (``sem_seg_head.*``).

    Args:
        cfg: the official config.
        input_shape: the backbone's ``output_shape()`` (``{"res2": ShapeSpec(channels, stride), ...}``).
    """

    def __init__(self, cfg, input_shape: dict[str, ShapeSpec]) -> None:
        super().__init__()
        head = cfg.MODEL.SEM_SEG_HEAD
        mf = cfg.MODEL.MASK_FORMER
        _check_choice("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", head.PIXEL_DECODER_NAME, PIXEL_DECODERS)
        _check_choice(
            "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", mf.TRANSFORMER_DECODER_NAME, TRANSFORMER_DECODERS
        )
        _check_choice(
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", mf.TRANSFORMER_IN_FEATURE, {SUPPORTED_IN_FEATURE}
        )
        missing = [name for name in head.IN_FEATURES if name not in input_shape]
        if missing:
            raise UserError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone does not output "
                f"(it gives {sorted(input_shape)})"
            )
        used = sorted((k for k in input_shape if k in head.IN_FEATURES), key=lambda k: input_shape[k].stride)
        self.in_features = used
        self.num_classes = head.NUM_CLASSES
        self.return_transformer_feature = bool(head.RETURN_TRANSFORMER_FEATURE)
        self.pixel_decoder = PIXEL_DECODERS[head.PIXEL_DECODER_NAME](cfg, input_shape)
        # With the multi-scale pixel-decoder input, the decoder reads CONVS_DIM-channel features.
        self.predictor = TRANSFORMER_DECODERS[mf.TRANSFORMER_DECODER_NAME].from_config(cfg, head.CONVS_DIM)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        mask: torch.Tensor | None = None,
        return_aux: bool | None = None,
    ) -> dict:
        """Run both decoders on one window of backbone features (frames in the batch dim).

        ``mask`` is ignored, as in the official code. ``return_aux`` is passed to the predictor.
        Returns the predictor's dict (plus ``transformer_features`` when
        ``MODEL.SEM_SEG_HEAD.RETURN_TRANSFORMER_FEATURE``).
        """
        del mask
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        out = self.predictor(multi_scale_features, mask_features, return_aux=return_aux)
        if self.return_transformer_feature:
            out["transformer_features"] = (
                encoder_features if encoder_features is not None else multi_scale_features[0]
            )
        return out
