"""The segmenter's transformer decoder: DVIS++'s variant of the video Mask2Former decoder.

``sem_seg_head.predictor`` in the official model (``VideoMultiScaleMaskedTransformerDecoder_dvisPlus``).
It decodes every frame of a window independently: the frames are the batch dimension throughout.
Learnable queries attend, layer by layer, to one level of the pixel decoder's pyramid (stride 32,
16, 8, 32, ...), masked by the previous layer's mask prediction, then to each other, then go through
an FFN. A prediction head (decoder norm, class head, mask MLP dotted with the mask features) runs
on the initial queries and after every layer.

Attention masks follow the official recipe exactly: the predicted mask logits are bilinearly resized
to the next level, ``sigmoid < 0.5`` marks a pixel blocked, rows (queries) with every pixel blocked
are opened entirely, and the mask is laid out per head as ``(frames * heads, queries, pixels)``
(True = blocked), the layout :class:`~dvis_attn_pl.model.attention.MultiheadAttention` takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .position_encoding import PositionEmbeddingSine

NUM_FEATURE_LEVELS = 3  # the official decoder always reads three pyramid levels


def _c2_xavier_fill(conv: nn.Conv2d) -> None:
    """detectron2's ``c2_xavier_fill``: Kaiming-uniform with a=1, zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class VideoMultiScaleMaskedTransformerDecoderDVISPlus(nn.Module):
    """Masked-attention query decoder over a window of frames (official key names).

    Args:
        in_channels: channels of the multi-scale features it reads.
        num_classes: K; the class head has K+1 outputs (last = no object).
        hidden_dim: query width C.
        num_queries: Q.
        nheads: attention heads.
        dim_feedforward: FFN width.
        dec_layers: decoder layers (the config's ``DEC_LAYERS`` minus one).
        pre_norm: pre-LayerNorm layers instead of post-norm.
        mask_dim: mask-feature channels (mask MLP output width).
        enforce_input_project: use a 1x1 conv input projection even when ``in_channels == hidden_dim``.
        num_frames: frames per clip in training (the eval batch is always one clip).
        num_reid_head_layers / reid_hidden_dim: the re-id MLP (``Identity`` when 0 layers).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        num_frames: int = 1,
        num_reid_head_layers: int = 3,
        reid_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(
                f"MODEL.MASK_FORMER.HIDDEN_DIM must be even for the sine encoding, got {hidden_dim}"
            )
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries
        self.num_frames = num_frames
        self.num_feature_levels = NUM_FEATURE_LEVELS
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(NUM_FEATURE_LEVELS, hidden_dim)

        self.input_proj = nn.ModuleList()
        for _ in range(NUM_FEATURE_LEVELS):
            if in_channels != hidden_dim or enforce_input_project:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                _c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        if num_reid_head_layers > 0:
            self.reid_embed = MLP(hidden_dim, reid_hidden_dim, hidden_dim, num_reid_head_layers)
            for layer in self.reid_embed.layers:
                nn.init.kaiming_uniform_(layer.weight, a=1)
                nn.init.zeros_(layer.bias)
        else:
            self.reid_embed = nn.Identity()

    @classmethod
    def from_config(cls, cfg, in_channels: int) -> VideoMultiScaleMaskedTransformerDecoderDVISPlus:
        """Build from an official config (``MODEL.MASK_FORMER.*``, ``MODEL.SEM_SEG_HEAD.*``)."""
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {mf.DEC_LAYERS}")
        return cls(
            in_channels,
            num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            hidden_dim=mf.HIDDEN_DIM,
            num_queries=mf.NUM_OBJECT_QUERIES,
            nheads=mf.NHEADS,
            dim_feedforward=mf.DIM_FEEDFORWARD,
            dec_layers=mf.DEC_LAYERS - 1,
            pre_norm=mf.PRE_NORM,
            mask_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            enforce_input_project=mf.ENFORCE_INPUT_PROJ,
            num_frames=cfg.INPUT.SAMPLING_FRAME_NUM,
            num_reid_head_layers=mf.NUM_REID_HEAD_LAYERS,
            reid_hidden_dim=mf.REID_HIDDEN_DIM,
        )

    # ------------------------------------------------------------------ heads and masks

    def _prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, with_class: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Class logits (BT, Q, K+1) (or None) and mask logits (BT, Q, Hm, Wm) from queries (Q, BT, C)."""
        normed = self.decoder_norm(output).transpose(0, 1)
        logits = self.class_embed(normed) if with_class else None
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(normed), mask_features)
        return logits, masks

    def _attention_mask(self, mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Boolean cross-attention mask (BT * heads, Q, h * w), True = blocked, for a level of ``size``."""
        resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
        blocked = resized.sigmoid().flatten(2) < 0.5  # (BT, Q, hw)
        # A query that would see no pixel at all sees every pixel instead (identical for every head).
        blocked &= ~blocked.all(dim=-1, keepdim=True)
        frames, queries, pixels = blocked.shape
        blocked = blocked.unsqueeze(1).expand(frames, self.num_heads, queries, pixels)
        return blocked.reshape(frames * self.num_heads, queries, pixels).detach()

    # ------------------------------------------------------------------ forward

    def _flatten_levels(
        self, x: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
        """Per level: features + level embedding (HW, BT, C), sine positions (HW, BT, C), and (H, W)."""
        srcs, poss, sizes = [], [], []
        for level, feat in enumerate(x):
            sizes.append((int(feat.shape[-2]), int(feat.shape[-1])))
            pos = self.pe_layer(feat).to(feat.dtype)  # float32 except after model.to(dtype)
            poss.append(pos.flatten(2).permute(2, 0, 1))
            src = self.input_proj[level](feat).flatten(2) + self.level_embed.weight[level][None, :, None]
            srcs.append(src.permute(2, 0, 1))
        return srcs, poss, sizes

    def forward(
        self,
        x: list[torch.Tensor],
        mask_features: torch.Tensor,
        mask: torch.Tensor | None = None,
        return_aux: bool | None = None,
    ) -> dict:
        """Decode a window.

        Args:
            x: three feature maps (BT, C, H_l, W_l), strides 32, 16, 8 (the pixel decoder's order).
            mask_features: (BT, mask_dim, Hm, Wm).
            mask: ignored (the official decoder discards it too).
            return_aux: also return every intermediate prediction in ``aux_outputs``; defaults to
                ``self.training``. In eval nothing downstream reads them, so they are skipped
                (``aux_outputs`` is then an empty list); the final outputs do not change.

        Returns the official dict: ``pred_logits`` (b, t, Q, K+1), ``pred_masks`` (b, Q, t, Hm, Wm),
        ``aux_outputs`` (list of ``{"pred_logits", "pred_masks"}`` for layers 0..L-1),
        ``pred_embds`` (b, C, t, Q, decoder-normed), ``pred_embds_without_norm``, ``pred_reid_embed``,
        ``mask_features`` (as given) and ``image_feats_info`` (size, src, pos of the stride-32 level).
        In eval b = 1 and t = BT.
        """
        del mask
        if len(x) != self.num_feature_levels:
            raise ValueError(f"the decoder takes {self.num_feature_levels} feature levels, got {len(x)}")
        if return_aux is None:
            return_aux = self.training
        srcs, poss, sizes = self._flatten_levels(x)
        frames = srcs[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, frames, -1)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, frames, -1)

        aux_logits: list[torch.Tensor] = []
        aux_masks: list[torch.Tensor] = []
        logits, masks = self._prediction_heads(
            output, mask_features, with_class=return_aux or not self.num_layers
        )
        for i in range(self.num_layers):
            if return_aux:
                aux_logits.append(logits)
                aux_masks.append(masks)
            level = i % self.num_feature_levels
            attn_mask = self._attention_mask(masks, sizes[level])
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], memory_mask=attn_mask, pos=poss[level], query_pos=query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            is_last = i == self.num_layers - 1
            logits, masks = self._prediction_heads(output, mask_features, with_class=return_aux or is_last)

        clips = frames // self.num_frames if self.training else 1
        if clips < 1 or frames % clips:
            raise ValueError(
                f"{frames} frames do not split into clips of INPUT.SAMPLING_FRAME_NUM={self.num_frames}"
            )

        def clip_masks(m: torch.Tensor) -> torch.Tensor:  # (b t) q h w -> b q t h w
            return m.unflatten(0, (clips, -1)).transpose(1, 2)

        def clip_logits(lg: torch.Tensor) -> torch.Tensor:  # (b t) q k -> b t q k
            return lg.unflatten(0, (clips, -1))

        def clip_queries(q: torch.Tensor) -> torch.Tensor:  # q (b t) c -> b c t q
            return q.unflatten(1, (clips, -1)).permute(1, 3, 2, 0)

        normed = self.decoder_norm(output)
        return {
            "pred_logits": clip_logits(logits),
            "pred_masks": clip_masks(masks),
            "aux_outputs": [
                {"pred_logits": clip_logits(lg), "pred_masks": clip_masks(m)}
                for lg, m in zip(aux_logits, aux_masks)
            ],
            "pred_embds": clip_queries(normed),
            "pred_embds_without_norm": clip_queries(output),
            "pred_reid_embed": clip_queries(self.reid_embed(normed)),
            "mask_features": mask_features,
            "image_feats_info": {"size": sizes[0], "src": srcs[0], "pos": poss[0]},
        }


# The official registry name, for builders that look decoders up by ``TRANSFORMER_DECODER_NAME``.
TRANSFORMER_DECODERS = {
    "VideoMultiScaleMaskedTransformerDecoder_dvisPlus": VideoMultiScaleMaskedTransformerDecoderDVISPlus
}

__all__ = ["TRANSFORMER_DECODERS", "VideoMultiScaleMaskedTransformerDecoderDVISPlus"]
