"""FLOPs of a call, counted by torch's own per-operator formulas (``torch.utils.flop_counter``).

``FlopCounterMode`` also attributes FLOPs to modules, and its module tracker hooks the backward of
every module input; the official sampler calls ``autograd.grad`` with respect to the leaf it fed the
UNet, which that hook refuses ("A leaf node was passed to _will_engine_execute_node"). This counts
the same formulas (an operator without one is decomposed first, as FlopCounterMode does) with no
module attribution, so it can wrap any call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

_SHAPE_QUERIES = {  # metadata calls that carry no work and must not be decomposed
    torch.ops.aten.is_contiguous.default, torch.ops.aten.is_contiguous.memory_format,
    torch.ops.aten.size.default, torch.ops.aten.stride.default, torch.ops.aten.numel.default,
    torch.ops.aten.dim.default, torch.ops.aten.storage_offset.default, torch.ops.prim.layout.default,
}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _SHAPE_QUERIES:
            return func(*args, **kwargs)
        packet = func._overloadpacket
        if packet not in flop_registry and func is not torch.ops.prim.device.default:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if packet in flop_registry:
            self.total += int(flop_registry[packet](*args, **kwargs, out_val=out))
        return out


def count_flops(call: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``call()`` once; return its result and the FLOPs of its matmuls, convolutions and attention."""
    with _Count() as counter:
        result = call()
    return result, counter.total
