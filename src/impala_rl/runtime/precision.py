"""The learner's compute precision: float32, or bfloat16 autocast where the device has it.

With ``bfloat16`` the network's forward (and so its backward) runs under
``torch.autocast``: matrix multiplications and convolutions in bfloat16, everything else
as autocast decides. The weights, their gradients and the optimiser state stay float32
(autocast casts copies), and the network's outputs are cast back to float32 before the
agent's loss, so V-trace, PopArt and the losses compute in float32 exactly as without it.

``auto`` picks bfloat16 only where the hardware computes it natively: a CUDA device that
reports bf16 support, or a CPU with AVX512-BF16 or AMX tiles (read from ``/proc/cpuinfo``).
Elsewhere bfloat16 would be emulated and slower, so ``auto`` stays float32 there and the
learner runs exactly as it does with ``float32``.
"""

from __future__ import annotations

import functools

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``float32`` or ``bfloat16``: ``auto`` becomes bfloat16 only where it is native."""
    if precision == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return precision


def describe(requested: str, resolved: str) -> str:
    """The start line's words for the learner's precision, e.g. ``learner bfloat16 (auto: native here)``."""
    if requested != "auto":
        return f"learner {resolved}"
    return f"learner {resolved} (auto: {'native here' if resolved == 'bfloat16' else 'no native bfloat16 here'})"


def _to_float32(x):
    """Floating tensors of a nested output (tuples, named tuples, lists, dicts) as float32."""
    if torch.is_tensor(x):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_to_float32(v) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_to_float32(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float32(v) for k, v in x.items()}
    return x


class AutocastForward:
    """Calls ``forward`` under bfloat16 autocast and returns its outputs in float32.

    Attribute access falls through to the wrapped module (the agent reads ``popart``
    from the callable it is given).
    """

    def __init__(self, forward, device: torch.device):
        self.forward = forward
        self.device_type = device.type

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.forward(*args, **kwargs)
        return _to_float32(out)

    def __getattr__(self, name):
        if name == "forward":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.forward, name)
