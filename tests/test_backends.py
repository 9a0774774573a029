"""fastlstm/_backends.py: how `auto` orders the GPU backends per op (resolved
with availability stubbed, since no GPU is needed to test the choice)."""

import pytest
import torch

from fastlstm import _backends

CUDA = torch.device("cuda")


@pytest.fixture
def gpu_backends_available(monkeypatch):
    real = _backends.unavailable_reason

    def reason(backend, device, dtype, *, proj=False, op=None, head_dim=None):
        if backend in ("cuda", "triton") and device.type == "cuda":
            if head_dim is not None and head_dim > _backends._MAX_HEAD_DIM.get((op, backend), head_dim):
                return real(backend, device, dtype, proj=proj, op=op, head_dim=head_dim)
            if dtype not in _backends._OP_DTYPES.get(op or "", {}).get(backend, _backends._DTYPES[backend]):
                return "dtype"
            return None
        return None if backend == "reference" else "not here"

    monkeypatch.setattr(_backends, "unavailable_reason", reason)


@pytest.mark.parametrize(("dtype", "expected"), [(torch.float32, "triton"), (torch.bfloat16, "triton"),
                                                 (torch.float64, "cuda")])
def test_auto_sparse_attention_on_cuda_prefers_triton_except_fp64(gpu_backends_available, dtype, expected):
    assert _backends.resolve("auto", CUDA, dtype, op="sparse_attention") == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_auto_lstm_on_cuda_prefers_cuda(gpu_backends_available, dtype):
    assert _backends.resolve("auto", CUDA, dtype) == "cuda"


def test_auto_sparse_attention_without_triton_takes_cuda(monkeypatch):
    monkeypatch.setattr(_backends, "unavailable_reason",
                        lambda b, d, t, *, proj=False, op=None, head_dim=None:
                        None if b in ("cuda", "reference") else "absent")
    assert _backends.resolve("auto", CUDA, torch.float32, op="sparse_attention") == "cuda"


def test_auto_sparse_attention_past_the_kernels_head_dim_takes_the_reference(gpu_backends_available):
    assert _backends.resolve("auto", CUDA, torch.float32, op="sparse_attention", head_dim=128) == "triton"
    assert _backends.resolve("auto", CUDA, torch.float32, op="sparse_attention", head_dim=256) == "reference"


def test_named_backend_past_its_head_dim_raises():
    with pytest.raises(RuntimeError, match="head_dim and v_dim <= 128"):
        _backends.resolve("triton", CUDA, torch.float32, op="sparse_attention", head_dim=256)
