"""Count the host reads of tensor values in a block of code (a diagnostic for tests and benchmarks).

On a GPU every read of a device tensor's values on the host (``.cpu()``, ``.item()``,
``.tolist()``, ``.numpy()``, ``int()``/``float()``/``bool()``, a blocking ``.to("cpu")``)
synchronises the stream. On the CPU they cannot be told from host-side reads, so every such call
is counted there: an upper bound of the synchronisations the same code makes on a GPU.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["HostReads"]

READS = {
    torch.Tensor.cpu,
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__bool__,
}


def _to_host(args: tuple, kwargs: dict) -> bool:
    """Whether a ``Tensor.to`` call is a blocking copy from a device to the host (never on a CPU
    machine, where the package's own reads go through ``.cpu()``/``.tolist()``)."""
    if args[0].device.type == "cpu" or kwargs.get("non_blocking") or (
        len(args) > 2 and isinstance(args[2], bool) and args[2]
    ):
        return False
    targets = [*args[1:], kwargs.get("device")]
    return any(isinstance(t, (str, torch.device)) and torch.device(t).type == "cpu" for t in targets)


class HostReads(TorchFunctionMode):
    """``with HostReads() as reads: ...`` counts the calls that read tensor values on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS or (func is torch.Tensor.to and _to_host(args, kwargs)):
            self.counts[func.__name__] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
