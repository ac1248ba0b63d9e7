"""``--precision``: Lightning's precisions plus ``tf32``, and the float32 matmul mode each one sets.

``32-true`` (the default) keeps every float32 product exact: TF32 tensor cores are off for
matmuls and for cuDNN convolutions (PyTorch's own default allows them for convolutions), so a
GPU run stays within the golden cases' tolerances. ``tf32`` runs the same float32 model with TF32
matmuls and convolutions on NVIDIA GPUs of the Ampere generation and later (10-bit mantissa
products, float32 accumulation); elsewhere it is ``32-true``. ``16-mixed`` / ``bf16-mixed`` run
under autocast (``16-mixed`` is the official fp16 evaluation).
"""

from __future__ import annotations

__all__ = ["PRECISIONS", "lightning_precision", "set_float32_matmul"]

# the model runs in float32, optionally under autocast: "true" half/double precisions cast the
# weights but not the frames, and fail mid-run
PRECISIONS = ("32-true", "32", "tf32", "16-mixed", "16", "bf16-mixed", "bf16")


def lightning_precision(precision: str) -> str:
    """The Lightning Trainer's ``precision`` for ours (``tf32`` is float32 for Lightning)."""
    return "32-true" if precision == "tf32" else precision


def set_float32_matmul(precision: str) -> None:
    """Allow TF32 for float32 matmuls and cuDNN convolutions exactly when ``precision`` is ``tf32``."""
    import torch

    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
