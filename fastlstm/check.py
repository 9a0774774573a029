"""``fastlstm check``: every available backend against the reference on a few
shapes, forward and backward, printed as a pass/fail table."""

from __future__ import annotations

import torch

from fastlstm import _backends
from fastlstm.nn import LSTM
from fastlstm.reference import lstm as reference_lstm
from fastlstm.testing import PARITY_TOLERANCE, max_abs_error

# (name, constructor kwargs, batch, seq_len, packed lengths or None)
CHECK_CASES = [
    ("uni", dict(input_size=8, hidden_size=16), 3, 11, None),
    ("bi-2layer", dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True), 2, 9, None),
    ("proj", dict(input_size=6, hidden_size=12, proj_size=5, num_layers=2, bidirectional=True), 2, 7, None),
    ("lengths", dict(input_size=5, hidden_size=8, bidirectional=True), 3, 8, [8, 3, 5]),
]


def _case_errors(backend: str, kwargs: dict, batch: int, seq_len: int, lengths, dtype) -> float:
    torch.manual_seed(0)
    module = LSTM(**kwargs, dtype=dtype, backend=backend)
    x = torch.randn(seq_len, batch, kwargs["input_size"], dtype=dtype, requires_grad=True)
    len_t = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    out, h, c = module._run(x, None, len_t)[:3]  # (out, h_n, c_n, gate record)
    grads = torch.autograd.grad(out.sum() + h.sum() + 0.5 * c.sum(), [x, *module.parameters()])
    ref_x = x.detach().double().requires_grad_(True)
    ref_w = [w.detach().double().requires_grad_(True) for w in module._flat_weights]
    r_out, r_h, r_c = reference_lstm(
        ref_x, None, ref_w, num_layers=module.num_layers, bidirectional=module.bidirectional,
        has_bias=module.bias, proj_size=module.proj_size, lengths=len_t,
    )
    r_grads = torch.autograd.grad(r_out.sum() + r_h.sum() + 0.5 * r_c.sum(), [ref_x, *ref_w])
    pairs = [(out, r_out), (h, r_h), (c, r_c), *zip(grads, r_grads)]
    return max(max_abs_error(a, b) for a, b in pairs)


def run_check(verbose: bool = False) -> int:
    backends = [b for b in _backends.available_backends("cpu") if b != "reference"] or ["reference"]
    if torch.cuda.is_available():
        backends += [f"{b}@cuda" for b in _backends.available_backends("cuda") if b != "reference"]
    failures = 0
    header = f"{'backend':<14}{'dtype':<10}{'case':<12}{'max error':>12}{'tolerance':>12}  result"
    print(header)
    print("-" * len(header))
    for backend in backends:
        name = backend.split("@")[0]
        for dtype in (torch.float32, torch.float64):
            reason = _backends.unavailable_reason(name, torch.device("cpu"), dtype)
            if reason is not None and "@" not in backend:
                print(f"{backend:<14}{str(dtype).removeprefix('torch.'):<10}{'(all)':<12}{'':>24}  skip: {reason}")
                continue
            tol = PARITY_TOLERANCE[dtype]["atol"] * 10
            for case, kwargs, batch, seq_len, lengths in CHECK_CASES:
                try:
                    err = _case_errors(name, kwargs, batch, seq_len, lengths, dtype)
                    ok = err <= tol
                    detail = f"{err:12.2e}"
                except Exception as exc:  # report, never hide, a crashing backend
                    ok, detail = False, f"{'error':>12}"
                    if verbose:
                        print(f"  {backend} {case}: {type(exc).__name__}: {exc}")
                failures += not ok
                print(f"{backend:<14}{str(dtype).removeprefix('torch.'):<10}{case:<12}{detail}{tol:12.0e}  "
                      f"{'pass' if ok else 'FAIL'}")
    print(f"\n{'all checks passed' if failures == 0 else f'{failures} check(s) FAILED'}")
    return 0 if failures == 0 else 1
