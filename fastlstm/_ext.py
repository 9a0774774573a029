"""Loads the compiled extension ``fastlstm._C``.

If it cannot load, fastlstm still works on the reference backend; a single
warning says why.
"""

from __future__ import annotations

import os
import warnings

_CAPABILITIES = ("scalar", "avx2", "avx512", "avx512_vnni")

try:
    from fastlstm import _C  # noqa: F401

    load_error: str | None = None
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    _C = None
    load_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"fastlstm: the compiled extension fastlstm._C could not be loaded ({load_error}); "
        "falling back to the (slow) reference backend.",
        RuntimeWarning,
        stacklevel=2,
    )

_requested = os.environ.get("FASTLSTM_CPU_CAPABILITY")
if _requested and _requested not in _CAPABILITIES:
    raise ValueError(
        f"FASTLSTM_CPU_CAPABILITY={_requested!r} is not one of {', '.join(_CAPABILITIES)}"
    )

_PROFILES = ("intel_avx512", "amd_zen4", "generic")
_profile = os.environ.get("FASTLSTM_CPU_PROFILE")
if _profile and _profile not in _PROFILES:
    raise ValueError(f"FASTLSTM_CPU_PROFILE={_profile!r} is not one of {', '.join(_PROFILES)}")


def cpu_tuning() -> dict | None:
    """The CPU kernels' tuning (profile, ISA, thresholds), chosen at run time from
    CPUID or forced by ``FASTLSTM_CPU_PROFILE``; None when ``_C`` is missing."""
    return _C.cpu_tuning() if _C is not None else None


def describe_cpu_tuning() -> str:
    t = cpu_tuning()
    if t is None:
        return "-"
    return (f"{t['profile']} (isa {t['isa']}, int8 amx {'on' if t['int8_amx'] else 'off'}, "
            f"big W_hh from {t['big_weights_bytes'] >> 10} KiB, {t['min_rows']} rows/chunk, "
            f"bwd team below batch {t['bwd_team_max_batch']})")


def describe_cpu() -> str:
    if _C is None:
        return "-"
    c = _C.cpu_description()
    return (f"{c['vendor']} family {c['family']:#x} model {c['model']:#x}, L1d {c['l1d_bytes'] >> 10} KiB, "
            f"L2 {c['l2_bytes'] >> 10} KiB/core, L3 {c['l3_bytes'] >> 20} MiB")


def available() -> bool:
    return _C is not None


def cpu_capability() -> str:
    """The ISA level the CPU kernels use (``scalar`` when ``_C`` is missing)."""
    return _C.cpu_capability() if _C is not None else "scalar"


def dtype_name(dtype) -> str:
    """The dtype argument of the ``_C`` entry points for a torch dtype
    ("float32", "float64", ...); a kernel rejects the names it has no variant for."""
    return str(dtype).removeprefix("torch.")


NO_BUF = (0, 0, 0, None)


def buf(tensor) -> tuple[int, int, int, object]:
    """``(address, numel, itemsize, owner)`` of a contiguous tensor or array, or
    ``NO_BUF`` for None.

    ``owner`` is the tensor itself: the argument tuple of a ``_C`` call keeps it
    alive until the call returns (the GIL released or not), and ``_C`` checks
    ``itemsize`` against the element type the kernel reads. The kernels assume
    dense buffers, so a non-contiguous one is a ValueError.
    """
    if tensor is None:
        return NO_BUF
    if hasattr(tensor, "data_ptr"):
        if not tensor.is_contiguous():
            raise ValueError(f"fastlstm: the kernels take contiguous buffers; got a tensor of shape "
                             f"{tuple(tensor.shape)} with strides {tensor.stride()} (call .contiguous())")
        return (tensor.data_ptr(), tensor.numel(), tensor.element_size(), tensor)
    if not tensor.flags.c_contiguous:
        raise ValueError(f"fastlstm: the kernels take contiguous buffers; got an array of shape "
                         f"{tensor.shape} with strides {tensor.strides} (use numpy.ascontiguousarray)")
    return (tensor.ctypes.data, tensor.size, tensor.itemsize, tensor)


def strided_buf(tensor) -> tuple[int, int, int, object]:
    """``(address, span, itemsize, owner)`` of a tensor with non-negative strides,
    for the kernels that take strides with the buffer: ``span`` is the number of
    elements from the first element to the last one (inclusive)."""
    if any(st < 0 for st in tensor.stride()):
        raise ValueError(f"fastlstm: negative strides {tensor.stride()} are not supported")
    span = 0 if tensor.numel() == 0 else 1 + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride()))
    return (tensor.data_ptr(), span, tensor.element_size(), tensor)
