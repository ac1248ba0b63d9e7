"""Pixel decoder: multi-scale deformable attention encoder + FPN (``sem_seg_head.pixel_decoder``)."""

from .ms_deform_attn import MSDeformAttn, deform_attn_sample
from .msdeform_pixel_decoder import MSDeformAttnPixelDecoder

__all__ = ["MSDeformAttn", "MSDeformAttnPixelDecoder", "deform_attn_sample"]
