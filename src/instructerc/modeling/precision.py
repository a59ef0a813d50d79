"""The precision policy: which floating-point type a model computes in, on which device.

One rule for training, ``predict``, ``evaluate``, ``serve`` and the experiment runner.
``auto`` picks bfloat16 where the hardware multiplies it natively and float32 elsewhere:

- CUDA GPUs that support bf16 (Ampere and later);
- CPUs with bf16 matrix instructions, as PyTorch reports them (x86 ``avx512_bf16`` or
  ``amx_bf16``; other architectures' ``*bf16`` capabilities). Elsewhere bf16 is emulated and
  slower than fp32, so ``auto`` stays fp32 there.

On this project's 2-core CPU (AMX) a 1,024 x 576 x 1,536 product ran at 186 GFLOPS in fp32 and
586 in bf16. ``float32``, ``bfloat16`` and ``float16`` force a type; float16 is for GPUs.
"""

from __future__ import annotations

from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


def cpu_capabilities() -> dict[str, Any]:
    """What PyTorch reports about this CPU's instruction sets (empty where it cannot say)."""
    import torch

    report = getattr(torch.cpu, "get_capabilities", None)
    if report is None:
        return {"avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())}
    try:
        return dict(report())
    except RuntimeError:
        return {}


def cpu_has_native_bf16(capabilities: dict[str, Any] | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware."""
    capabilities = cpu_capabilities() if capabilities is None else capabilities
    return any(bool(value) for name, value in capabilities.items() if name.endswith("bf16"))


def device_type(device: Any) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def supports_bf16(device: Any) -> bool:
    """Whether ``device`` computes bf16 natively (see the module docstring)."""
    import torch

    kind = device_type(device)
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_has_native_bf16()
    return False


# Short spellings other libraries use; refused with the name to use, so that one vocabulary
# holds in recipes, on the command line and in Python.
_SPELLINGS = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def dtype_choice(value: Any) -> str:
    """The name in :data:`DTYPES` that ``value`` asks for: one of those names, or a ``torch.dtype``
    of those types (``torch.float16``, as Hugging Face's ``torch_dtype`` takes it)."""
    from instructerc.errors import InputError

    name = dtype_name(value) if type(value).__name__ == "dtype" and type(value).__module__ == "torch" else value
    if isinstance(name, str) and name in DTYPES:
        return name
    hint = f"; did you mean '{_SPELLINGS[value]}'?" if isinstance(value, str) and value in _SPELLINGS else ""
    raise InputError(f"unknown dtype {value!r} (known: {', '.join(DTYPES)}, or the torch dtype of one){hint}", field="dtype")


def resolve_dtype(name: Any, device: Any) -> str:
    """The concrete type (``float32``, ``bfloat16``, ``float16``) that ``name`` means on ``device``
    (``name``: see :func:`dtype_choice`)."""
    name = dtype_choice(name)
    if name != "auto":
        return name
    return "bfloat16" if supports_bf16(device) else "float32"


def torch_dtype(name: Any, device: Any) -> Any:
    import torch

    return getattr(torch, resolve_dtype(name, device))


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def mixed_precision(name: str, device: Any) -> str:
    """accelerate's ``mixed_precision`` for training in ``name`` on ``device``: matrix products
    run in the low-precision type under autocast, trainable weights stay float32."""
    return {"bfloat16": "bf16", "float16": "fp16"}.get(resolve_dtype(name, device), "no")
