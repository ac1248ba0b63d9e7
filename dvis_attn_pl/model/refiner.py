"""The offline temporal refiner of DVIS-DAQ (``refiner`` in the official offline model).

It refines N instance tracks over a whole video. Each layer runs, in this order:

1. self-attention over **time** for each instance (sequence T, batch B*N);
2. with ``use_local_attn``, a short temporal convolution (Conv1d k5, ReLU, Conv1d k3, both with
   replicate padding) added to its input and LayerNorm-ed (``conv_short_aggregate_layers``,
   ``conv_norms``);
3. self-attention over **instances** within each frame (sequence N, batch B*T);
4. cross-attention from the instances of frame t to the segmenter queries of the same frame t;
5. an FFN.

There are no positional embeddings and no padding masks anywhere (the official code accepts a
padding mask and ignores it). Only the last layer is decoded at inference:

* class: ``x = decoder_norm(out)``; per instance the frames are pooled with weights
  ``softmax_t(activation_proj(x))`` (padded frames included), and ``class_embed`` is applied to
  the pooled vector. The logits are the same for every frame; they are returned expanded over T
  in the official ``(B, T, N, K+1)`` layout and the meta-architecture takes frame 0.
* masks: ``mask_embed(x)`` dotted with the mask features of the same frame, decoded in time
  chunks of ``windows`` frames (``MODEL.MASK_FORMER.TEST.WINDOW_SIZE``) to bound peak memory.

Where masks live: the official code copies every decoded chunk to the host as float32. Here
:meth:`TemporalRefiner.decode_masks` decodes on the device of the mask features by default and can
decode a subset of instances, so the meta-architecture decodes only the instances the final top-k
keeps (at most ``TEST.MAX_NUM``) instead of all N. ``mask_device`` moves each chunk elsewhere
(e.g. the host) when even that does not fit.

The temporal pooling is a capture site (:class:`TemporalPoolingProjection`, official path
``refiner.activation_proj``, kind ``activation``); its weights are also always returned as
``pooling_weights`` (B, N, T) since they are tiny.
"""

from __future__ import annotations

import torch
from torch import nn

from .capture import CaptureSite
from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer


class TemporalPoolingProjection(CaptureSite, nn.Linear):
    """``nn.Linear(C, 1)`` scoring each frame of an instance; :meth:`pool_weights` softmaxes over time.

    The parameters stay ``weight``/``bias`` (official ``refiner.activation_proj.*`` keys).
    """

    def pool_weights(self, x: torch.Tensor, time_dim: int) -> torch.Tensor:
        """Softmax over ``time_dim`` of the projection of ``x`` (..., C) -> (..., 1).

        When captured, emits ``{"weights": w}`` with ``w`` laid out as the official
        ``(layers=1, B, T, N, 1)`` tensor (``x`` must then be (B, T, N, C) with ``time_dim=1``).
        """
        weights = self(x).softmax(dim=time_dim)
        if self.capture is not None:
            self.emit({"weights": weights.unsqueeze(0)})
        return weights


def _local_conv(channels: int) -> nn.Sequential:
    """Conv1d(k5) -> ReLU -> Conv1d(k3) over time, 'same' length with replicate padding.

    An ``nn.Sequential`` so the keys are the official ``{i}.0.*`` and ``{i}.2.*``.
    """
    return nn.Sequential(
        nn.Conv1d(channels, channels, kernel_size=5, padding="same", padding_mode="replicate"),
        nn.ReLU(),
        nn.Conv1d(channels, channels, kernel_size=3, padding="same", padding_mode="replicate"),
    )


class TemporalRefiner(nn.Module):
    """DVIS-DAQ's offline refiner with the official state_dict keys (see the module docstring).

    Build it from an official config, ``TemporalRefiner(cfg)``, or from keyword arguments:

    Args:
        hidden_dim: channel width C (``MODEL.MASK_FORMER.HIDDEN_DIM``).
        dim_feedforward: FFN width (``MODEL.MASK_FORMER.DIM_FEEDFORWARD``).
        nheads: attention heads (``MODEL.MASK_FORMER.NHEADS``).
        num_layers: refiner layers (``MODEL.REFINER.DECODER_LAYERS``).
        mask_dim: mask-embedding width; the official model passes ``HIDDEN_DIM``.
        num_classes: K; the class head has K+1 outputs (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``).
        windows: frames per mask-decoding chunk (``MODEL.MASK_FORMER.TEST.WINDOW_SIZE``).
        use_local_attn: add the temporal convolution (``MODEL.VIDEO_HEAD.USE_LOCAL_ATTN``).
    """

    def __init__(
        self,
        cfg=None,
        *,
        hidden_dim: int = 256,
        dim_feedforward: int = 2048,
        nheads: int = 8,
        num_layers: int = 6,
        mask_dim: int | None = None,
        num_classes: int = 40,
        windows: int = 3,
        use_local_attn: bool = False,
    ) -> None:
        super().__init__()
        if cfg is not None:
            mf = cfg.MODEL.MASK_FORMER
            hidden_dim, dim_feedforward, nheads = mf.HIDDEN_DIM, mf.DIM_FEEDFORWARD, mf.NHEADS
            num_layers = cfg.MODEL.REFINER.DECODER_LAYERS
            mask_dim = mf.HIDDEN_DIM
            num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
            windows = mf.TEST.WINDOW_SIZE
            use_local_attn = bool(cfg.MODEL.VIDEO_HEAD.USE_LOCAL_ATTN)
        if num_layers < 1:
            raise ValueError(f"MODEL.REFINER.DECODER_LAYERS must be >= 1, got {num_layers}")
        if windows < 1:
            raise ValueError(f"MODEL.MASK_FORMER.TEST.WINDOW_SIZE must be >= 1, got {windows}")
        mask_dim = hidden_dim if mask_dim is None else mask_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = nheads
        self.windows = windows
        self.use_local_attn = use_local_attn

        def stack(make) -> nn.ModuleList:
            return nn.ModuleList(make() for _ in range(num_layers))

        self.transformer_time_self_attention_layers = stack(lambda: SelfAttentionLayer(hidden_dim, nheads))
        self.transformer_obj_self_attention_layers = stack(lambda: SelfAttentionLayer(hidden_dim, nheads))
        self.transformer_cross_attention_layers = stack(lambda: CrossAttentionLayer(hidden_dim, nheads))
        self.transformer_ffn_layers = stack(lambda: FFNLayer(hidden_dim, dim_feedforward))
        # Empty (no keys) unless the local temporal convolution is on, as in the official model.
        self.conv_short_aggregate_layers = (
            stack(lambda: _local_conv(hidden_dim)) if use_local_attn else nn.ModuleList()
        )
        self.conv_norms = stack(lambda: nn.LayerNorm(hidden_dim)) if use_local_attn else nn.ModuleList()

        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.activation_proj = TemporalPoolingProjection(hidden_dim, 1)
        # The official padding of tracked sequences goes through this; it is an identity (no keys).
        self.padding_embed = nn.Identity()

    # ------------------------------------------------------------------ layers

    def _layer(self, i: int, x: torch.Tensor, memory: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """One refiner layer on ``x`` in time layout (T, B*N, C); returns the object layout (N, B*T, C)."""
        _, bn, channels = x.shape
        n_ins = bn // batch
        x = self.transformer_time_self_attention_layers[i](x)  # (T, B*N, C)
        if self.use_local_attn:
            seq = x.permute(1, 2, 0)  # (B*N, C, T)
            seq = self.conv_norms[i]((self.conv_short_aggregate_layers[i](seq) + seq).transpose(1, 2))
            obj = seq.reshape(batch, n_ins, frames, channels).permute(1, 0, 2, 3)  # (N, B, T, C)
        else:
            obj = x.reshape(frames, batch, n_ins, channels).permute(2, 1, 0, 3)  # (N, B, T, C)
        obj = obj.reshape(n_ins, batch * frames, channels)
        obj = self.transformer_obj_self_attention_layers[i](obj)
        obj = self.transformer_cross_attention_layers[i](obj, memory)
        return self.transformer_ffn_layers[i](obj)

    def refine(self, instance_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
        """Run every layer. ``instance_embeds`` (B, C, T, N), ``frame_embeds`` (B, C, T, Q) ->
        last-layer output (B, T, N, C), before ``decoder_norm``."""
        batch, channels, frames, n_ins = instance_embeds.shape
        if frame_embeds.shape[:3] != (batch, channels, frames):
            raise ValueError(
                f"refiner: frame_embeds {tuple(frame_embeds.shape)} does not match instance_embeds "
                f"{tuple(instance_embeds.shape)} in (B, C, T)"
            )
        memory = frame_embeds.permute(3, 0, 2, 1).reshape(frame_embeds.shape[3], batch * frames, channels)
        x = instance_embeds.permute(2, 0, 3, 1).reshape(frames, batch * n_ins, channels)  # (T, B*N, C)
        for i in range(self.num_layers):
            obj = self._layer(i, x, memory, batch, frames)  # (N, B*T, C)
            grid = obj.reshape(n_ins, batch, frames, channels)
            x = grid.permute(2, 1, 0, 3).reshape(frames, batch * n_ins, channels)
        return grid.permute(1, 2, 0, 3)  # (B, T, N, C)

    # ------------------------------------------------------------------ heads

    def classify(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal pooling + class head. ``normed`` (B, T, N, C) after ``decoder_norm`` ->
        (logits (B, N, K+1), pooling weights (B, N, T))."""
        weights = self.activation_proj.pool_weights(normed, time_dim=1)  # (B, T, N, 1)
        pooled = (normed * weights).sum(dim=1)  # (B, N, C)
        return self.class_embed(pooled), weights.squeeze(-1).transpose(1, 2)

    def decode_masks(
        self,
        mask_embeds: torch.Tensor,
        mask_features: torch.Tensor,
        rows: torch.Tensor | None = None,
        mask_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Mask logits (B, n, T, H, W) float32 for instance ``rows`` (all N when None).

        ``mask_embeds`` (B, T, N, D) from :meth:`forward`; ``mask_features`` (B, T, D, H, W).
        Decoded ``windows`` frames at a time; each chunk goes to ``mask_device`` (default: the
        device of ``mask_features``).
        """
        if rows is not None:
            mask_embeds = mask_embeds.index_select(2, rows.to(mask_embeds.device))
        target = mask_features.device if mask_device is None else torch.device(mask_device)
        chunks = []
        for start in range(0, mask_embeds.shape[1], self.windows):
            emb = mask_embeds[:, start : start + self.windows]
            feats = mask_features[:, start : start + self.windows].to(emb.device)
            chunk = torch.einsum("btnc,btchw->bnthw", emb, feats)
            chunks.append(chunk.to(target, torch.float32))
        return torch.cat(chunks, dim=2)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        instance_embeds: torch.Tensor,
        padding_mask: torch.Tensor | None,
        frame_embeds: torch.Tensor,
        mask_features: torch.Tensor | None = None,
        *,
        decode_masks: bool = True,
        mask_device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Refine N instances over a video (inference; only the last layer is decoded).

        Args:
            instance_embeds: (B, C, T, N) instance queries per frame.
            padding_mask: (B, N, T) True where a frame was padded; accepted and ignored, as in
                the official model.
            frame_embeds: (B, C, T, Q) the segmenter's decoder-normed queries.
            mask_features: (B, T, C, H, W); needed only when ``decode_masks``.
            decode_masks: decode every instance's masks (the official behaviour). The
                meta-architecture passes False and decodes only what it keeps.
            mask_device: where decoded mask chunks go (default: ``mask_features``' device).

        Returns a dict: ``pred_logits`` (B, T, N, K+1) (an expanded view: the same logits for
        every frame), ``pred_masks`` (B, N, T, H, W) float32 or None, ``pred_embds`` (B, C, T, N)
        (last layer before ``decoder_norm``), ``mask_embeds`` (B, T, N, D) and
        ``pooling_weights`` (B, N, T) (softmax over time of the class pooling).
        """
        del padding_mask  # the official refiner ignores it (its uses are commented out)
        out = self.refine(instance_embeds, frame_embeds)  # (B, T, N, C)
        normed = self.decoder_norm(out)
        logits, pooling = self.classify(normed)
        mask_embeds = self.mask_embed(normed)
        masks = None
        if decode_masks:
            if mask_features is None:
                raise ValueError("refiner: mask_features are required to decode masks")
            masks = self.decode_masks(mask_embeds, mask_features, mask_device=mask_device)
        frames = out.shape[1]
        return {
            "pred_logits": logits.unsqueeze(1).expand(-1, frames, -1, -1),
            "pred_masks": masks,
            "pred_embds": out.permute(0, 3, 1, 2),
            "mask_embeds": mask_embeds,
            "pooling_weights": pooling,
        }
