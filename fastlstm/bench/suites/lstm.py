"""fp32 LSTM: S1-S5 (or ``--shapes``), inference and training (forward +
backward of a sum loss), fastlstm against torch.nn.LSTM and ONNX Runtime.

Correctness before timing, two checks per fastlstm cell:

1. the full shape against a float64 result (``torch.nn.LSTM`` in float64 on
   the same weights: the same math as ``fastlstm.reference``, fast enough for
   T = 1440) with the design's error rule, ``fastlstm.testing.within_error_rule``:
   fastlstm's error <= 2x torch fp32's error + a floor;
2. the same configuration on a short slice (T <= 16, B <= 2) against
   ``fastlstm.reference`` itself in float64, with ``fastlstm.testing``'s
   fp32 parity tolerance.
"""

from __future__ import annotations

import copy
import zlib

import torch
from torch import nn

from fastlstm.bench import core, peers
from fastlstm.bench.core import Case, Check, Impl, Prepared
from fastlstm.bench.shapes import LSTM_SHAPES, TRAIN_SMALL_SHAPES, LSTMShape, lstm_flops

INFERENCE = "inference"
TRAINING = "training"


def seed_for(shape: LSTMShape) -> int:
    return zlib.crc32(shape.label().encode())


def torch_model(shape: LSTMShape, device: str = "cpu") -> nn.LSTM:
    """The torch.nn.LSTM every implementation of ``shape`` gets its weights from."""
    torch.manual_seed(seed_for(shape))
    return nn.LSTM(shape.I, shape.H, num_layers=shape.L, bidirectional=shape.bi, batch_first=True).to(device)


def inputs(shape: LSTMShape, device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed_for(shape) + 1)
    return torch.randn(shape.B, shape.T, shape.I, generator=gen).to(device)


def fastlstm_backends(ctx) -> list[tuple[str, str | None]]:
    """``[(backend name, why it cannot run or None)]`` for the requested backends."""
    from fastlstm import _backends

    device = torch.device(ctx.device)
    out = []
    for requested in ctx.backends:
        if requested == "auto":
            out.append((_backends.resolve("auto", device, torch.float32), None))
        else:
            out.append((requested, _backends.unavailable_reason(requested, device, torch.float32)))
    return out


class ShapeState:
    """Models, inputs and float64 results of one shape, built once and shared
    by its inference, training and int8 cells."""

    def __init__(self, shape: LSTMShape, device: str):
        self.shape, self.device = shape, device
        self.torch = torch_model(shape, device)
        self.x = inputs(shape, device)
        self._fast: dict = {}
        self._ref: dict = {}

    def fast(self, backend: str):
        import fastlstm

        if backend not in self._fast:
            self._fast[backend] = fastlstm.LSTM.from_torch(self.torch, backend=backend)
        return self._fast[backend]

    def forward_truth(self) -> dict:
        """float64 output and torch fp32 output (for the error rule)."""
        if "fwd" not in self._ref:
            with torch.no_grad():
                ref64 = copy.deepcopy(self.torch).double()(self.x.double())[0]
                out32 = self.torch(self.x)[0]
            self._ref["fwd"] = {"ref64": ref64, "torch32": out32}
        return self._ref["fwd"]

    def training_truth(self) -> dict:
        if "bwd" not in self._ref:
            grads64 = _grads(copy.deepcopy(self.torch).double(), self.x.double())
            grads32 = _grads(self.torch, self.x)
            self._ref["bwd"] = {"ref64": grads64, "torch32": grads32}
        return self._ref["bwd"]


def state(ctx, shape: LSTMShape) -> ShapeState:
    key = ("lstm", shape)
    if key not in ctx.cache:
        ctx.cache[key] = ShapeState(shape, ctx.device)
    return ctx.cache[key]


def _grads(model, x) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    out = model(x)[0]
    return list(torch.autograd.grad(out.sum(), [x, *model.parameters()]))


def error_rule_check(actual: list, torch32: list, ref64: list) -> Check:
    """The design's rule on every tensor; the floor scales with each tensor's magnitude
    (gradients of a sum over T steps are O(T))."""
    from fastlstm.testing import ERROR_FLOOR, ERROR_RATIO, max_abs_error

    results = []  # (error, tolerance) per tensor
    for a, t, r in zip(actual, torch32, ref64):
        floor = ERROR_FLOOR * max(1.0, r.abs().max().item())
        err, peer_err = max_abs_error(a, r), max_abs_error(t, r)
        results.append((err, ERROR_RATIO * peer_err + floor))
    passed = all(err <= tol for err, tol in results)
    # report the tensor closest to (or furthest past) its bound
    worst, worst_tol = max(results, key=lambda et: et[0] / et[1])
    return Check(worst, worst_tol, passed, "" if passed else "exceeds 2x torch fp32 error vs float64")


def reference_check(shape: LSTMShape, backend: str, training: bool, device: str) -> None:
    """fastlstm on a short slice of the same configuration against fastlstm.reference in
    float64; raises AssertionError naming what differs."""
    import fastlstm
    from fastlstm.reference import lstm as reference_lstm
    from fastlstm.testing import assert_parity

    small = LSTMShape("slice", min(shape.B, 2), min(shape.T, 16), shape.I, shape.H, shape.L, shape.bi)
    model = fastlstm.LSTM.from_torch(torch_model(small, device), backend=backend)
    x = inputs(small, device).requires_grad_(training)
    out = model(x)[0]
    x64 = x.detach().double().requires_grad_(training)
    w64 = [w.detach().double().requires_grad_(training) for w in model._flat_weights]
    ref = reference_lstm(x64.transpose(0, 1), None, w64, num_layers=small.L, bidirectional=small.bi,
                         has_bias=True)[0].transpose(0, 1)
    assert_parity(out, ref, torch.float32, name="output (short slice vs fastlstm.reference)")
    if training:
        got = torch.autograd.grad(out.sum(), [x, *model.parameters()])
        want = torch.autograd.grad(ref.sum(), [x64, *w64])
        for g, w in zip(got, want):
            assert_parity(g, w, torch.float32, name="gradient (short slice vs fastlstm.reference)")


def _fastlstm_impl(ctx, shape: LSTMShape, mode: str, backend: str, reason: str | None) -> Impl:
    def build() -> Prepared:
        if reason is not None:
            raise core.Unavailable(f"backend {backend!r}: {reason}")
        st = state(ctx, shape)
        model = st.fast(backend)
        x = st.x

        if mode == INFERENCE:
            model.eval()

            def fn():
                with torch.no_grad():
                    return model(x)

            def check() -> Check:
                reference_check(shape, backend, False, ctx.device)
                truth = st.forward_truth()
                with torch.no_grad():
                    out = model(x)[0]
                return error_rule_check([out], [truth["torch32"]], [truth["ref64"]])
        else:
            model.train()
            xg = x.detach().requires_grad_(True)
            params = list(model.parameters())

            def fn():
                out = model(xg)[0]
                return torch.autograd.grad(out.sum(), [xg, *params])

            def check() -> Check:
                reference_check(shape, backend, True, ctx.device)
                truth = st.training_truth()
                return error_rule_check(_grads(model, x), truth["torch32"], truth["ref64"])

        return Prepared(fn=fn, check=check, sync=ctx.sync())

    return Impl(f"fastlstm:{backend}", True, build)


def _torch_impl(ctx, shape: LSTMShape, mode: str) -> Impl:
    def build() -> Prepared:
        st = state(ctx, shape)
        model, x = st.torch, st.x
        if mode == INFERENCE:
            model.eval()

            def fn():
                with torch.no_grad():
                    return model(x)
        else:
            model.train()
            xg = x.detach().requires_grad_(True)
            params = list(model.parameters())

            def fn():
                out = model(xg)[0]
                return torch.autograd.grad(out.sum(), [xg, *params])

        def check() -> Check:
            from fastlstm.testing import max_abs_error

            if mode == INFERENCE:
                truth = st.forward_truth()
                return Check(max_abs_error(truth["torch32"], truth["ref64"]))
            truth = st.training_truth()
            return Check(max(max_abs_error(a, b) for a, b in zip(truth["torch32"], truth["ref64"])))

        return Prepared(fn=fn, check=check, sync=ctx.sync())

    name = "torch" if ctx.device == "cpu" else "torch (cuDNN)"
    return Impl(name, False, build)


def onnx_export(ctx, shape: LSTMShape):
    """(onnx path, inputs npz path) of the shape's torch.nn.LSTM, exported once per run."""
    import numpy as np

    if shape not in ctx.exports:
        st = state(ctx, shape)
        base = ctx.workdir / f"lstm_{seed_for(shape):08x}"
        model = torch_model(shape, "cpu").eval()
        peers.export_onnx(model, (st.x.cpu(),), base.with_suffix(".onnx"), ["x"])
        np.savez(base.with_suffix(".npz"), x=st.x.cpu().numpy())
        ctx.exports[shape] = (base.with_suffix(".onnx"), base.with_suffix(".npz"))
    return ctx.exports[shape]


def ort_impl(ctx, shape: LSTMShape, quantize: bool, on_output) -> Impl:
    def build() -> Prepared:
        reason = peers.missing_reason("onnxruntime")
        if reason is not None:
            raise core.Missing(reason)
        if ctx.device != "cpu":
            raise core.Skipped("ONNX Runtime is benchmarked on CPU only")
        onnx_path, npz = onnx_export(ctx, shape)
        return Prepared(deferred={"onnx": onnx_path, "inputs": npz, "quantize": quantize,
                                  "on_output": on_output(state(ctx, shape))})

    return Impl(peers.ORT_INT8 if quantize else peers.ORT_FP32, False, build)


def _ort_fp32_error(st: ShapeState):
    def on_output(array) -> Check:
        from fastlstm.testing import max_abs_error

        return Check(max_abs_error(torch.from_numpy(array), st.forward_truth()["ref64"].cpu()))

    return on_output


def plan(ctx) -> list[Case]:
    shapes = ctx.shapes or list(LSTM_SHAPES)
    backends = fastlstm_backends(ctx)
    cases = []
    for shape in shapes:
        for mode in (INFERENCE, TRAINING):
            case = Case("lstm", shape.name, mode, {**shape.params(), "dtype": "float32", "batch_first": True},
                        flops=lstm_flops(shape, mode))
            case.impls = [_fastlstm_impl(ctx, shape, mode, b, r) for b, r in backends]
            case.impls.append(_torch_impl(ctx, shape, mode))
            if mode == INFERENCE:
                case.impls.append(ort_impl(ctx, shape, False, _ort_fp32_error))
            else:
                case.note = "ONNX Runtime has no training path"
            cases.append(case)
    if not ctx.shapes:  # the train-small group: training only, against torch
        for shape in TRAIN_SMALL_SHAPES:
            case = Case("lstm", f"train-small-{shape.name}", TRAINING,
                        {**shape.params(), "dtype": "float32", "batch_first": True}, flops=lstm_flops(shape, TRAINING))
            case.impls = [_fastlstm_impl(ctx, shape, TRAINING, b, r) for b, r in backends]
            case.impls.append(_torch_impl(ctx, shape, TRAINING))
            cases.append(case)
    return cases
