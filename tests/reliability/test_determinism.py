"""Determinism: identical outputs and gradients, bit for bit, across runs and
torch thread counts under torch.use_deterministic_algorithms(True) (the weight
gradients then sum in fastlstm's fixed order, not a BLAS's); the mode is honoured."""

import pytest
import torch

import fastlstm
from fastlstm import _backends

CFGS = {
    "uni": dict(),
    "bi-2layer": dict(num_layers=2, bidirectional=True),
    "bi-proj": dict(bidirectional=True, proj_size=5),
}


def _run(module, x, hx, lengths=None):
    out, (h, c) = module(x, hx) if lengths is None else module(
        torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    if lengths is not None:
        out = out.data
    params = [t for t in (x, *hx, *module.parameters()) if t.requires_grad]
    grads = torch.autograd.grad((out * out).sum() + h.sum() + c.sum(), params)
    return [out.detach(), h.detach(), c.detach(), *grads]


@pytest.fixture
def threads():
    """Deterministic mode on (what the bitwise promise is made under); thread count restored."""
    saved, saved_mode = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(saved)
    torch.use_deterministic_algorithms(saved_mode)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("backend", fastlstm.available_backends("cpu"))
@pytest.mark.parametrize("cfg", CFGS.values(), ids=CFGS.keys())
def test_bitwise_across_runs_and_thread_counts(cfg, backend, packed, threads):
    torch.manual_seed(0)
    module = fastlstm.LSTM(6, 16, **cfg, backend=backend)
    n = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    B = 16  # large enough that a batch split across threads would show
    x = torch.randn(12, B, 6, requires_grad=True)
    hx = (torch.randn(n, B, cfg.get("proj_size", 0) or 16, requires_grad=True),
          torch.randn(n, B, 16, requires_grad=True))
    lengths = torch.randint(1, 13, (B,)) if packed else None
    results = {}
    for num_threads in (1, 2, 1, 2):
        torch.set_num_threads(num_threads)
        results.setdefault(num_threads, []).append(_run(module, x, hx, lengths))
    reference = results[1][0]
    for num_threads, runs in results.items():
        for run in runs:
            for i, (a, e) in enumerate(zip(run, reference)):
                assert torch.equal(a, e), f"result {i} differs with {num_threads} threads"


@pytest.mark.parametrize("backend", fastlstm.available_backends("cpu"))
def test_use_deterministic_algorithms_honoured_on_cpu(backend):
    torch.manual_seed(0)
    module = fastlstm.LSTM(6, 8, bidirectional=True, backend=backend)
    x = torch.randn(7, 3, 6, requires_grad=True)
    hx = (torch.zeros(2, 3, 8), torch.zeros(2, 3, 8))
    free = _run(module, x, hx)
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        strict = [_run(module, x, hx) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(saved)
    # Deterministic mode sums the weight gradients in fastlstm's fixed order:
    # the same bits every run, and the free mode's values up to rounding.
    for a, e in zip(strict[1], strict[0]):
        assert torch.equal(a, e)
    for a, e in zip(strict[0], free):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_nondeterministic_backends_refused_in_deterministic_mode(monkeypatch):
    # The mechanism, exercised on CPU by marking the compiled backend nondeterministic.
    if "cpu" not in fastlstm.available_backends("cpu"):
        pytest.skip("fastlstm._C unavailable")
    monkeypatch.setattr(_backends, "NONDETERMINISTIC", ("cpu",))
    x = torch.randn(3, 2, 4)
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert _backends.resolve("auto", x.device, x.dtype) == "reference"  # auto switches
        with pytest.raises(RuntimeError, match="deterministic"):
            fastlstm.LSTM(4, 5, backend="cpu")(x)  # an explicit choice raises
    finally:
        torch.use_deterministic_algorithms(saved)
    assert _backends.resolve("auto", x.device, x.dtype) == "cpu"


def test_deterministic_policy_on_gpu_backends():
    # Policy (docs/reliability.md): every fastlstm GPU path is deterministic
    # (no atomics in reductions), or the backend table refuses it while
    # torch.use_deterministic_algorithms(True) is on. The table must say which.
    nondeterministic = getattr(_backends, "NONDETERMINISTIC", ())
    for name in nondeterministic:
        assert name in _backends.BACKENDS
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the GPU half of the policy runs where one is present")
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for name in fastlstm.available_backends("cuda"):
            module = fastlstm.LSTM(6, 8, bidirectional=True, device="cuda", backend=name)
            x = torch.randn(7, 3, 6, device="cuda", requires_grad=True)
            if name in nondeterministic:
                with pytest.raises(RuntimeError, match="deterministic"):
                    module(x)
                continue
            runs = [_run(module, x, (torch.zeros(2, 3, 8, device="cuda"),) * 2) for _ in range(2)]
            for a, e in zip(*runs):
                assert torch.equal(a, e), f"{name} is not deterministic"
    finally:
        torch.use_deterministic_algorithms(saved)


@pytest.mark.parametrize("backend", fastlstm.available_backends("cpu"))
def test_sparse_attention_bitwise_across_thread_counts(backend, threads):
    torch.manual_seed(0)
    module = fastlstm.SparseAttention(16, 4, window=(5, 2), global_tokens=2, backend=backend)
    x = torch.randn(40, 4, 16, requires_grad=True)
    mask = torch.rand(4, 40) < 0.2

    def run():
        out, _ = module(x, x, x, key_padding_mask=mask, need_weights=False)
        return [out.detach(), *torch.autograd.grad((out * out).sum(), [x, *module.parameters()])]

    runs = []
    for num_threads in (1, 2, 1, 2):
        torch.set_num_threads(num_threads)
        runs.append(run())
    for run_ in runs[1:]:
        for a, e in zip(run_, runs[0]):
            assert torch.equal(a, e)


@pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C unavailable")
def test_quantized_lstm_bitwise_across_thread_counts(threads):
    module = fastlstm.quantize_dynamic(torch.nn.Sequential(torch.nn.LSTM(6, 16, bidirectional=True)))[0]
    x = torch.randn(12, 16, 6)
    runs = []
    for num_threads in (1, 2, 1, 2):
        torch.set_num_threads(num_threads)
        out, (h, c) = module(x)
        runs.append((out, h, c))
    for run_ in runs[1:]:
        for a, e in zip(run_, runs[0]):
            assert torch.equal(a, e)
