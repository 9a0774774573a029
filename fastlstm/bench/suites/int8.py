"""int8 LSTM inference on S1-S5 (or ``--shapes``): fastlstm's dynamic int8
LSTM against torch's dynamic int8 LSTM (``torch.ao.quantization.quantize_dynamic``)
and ONNX Runtime's dynamically quantised model
(``onnxruntime.quantization.quantize_dynamic``), all from the same fp32
weights. Every row shows its max |error| against the fp32 output (torch.nn.LSTM
fp32 on the same input).

fastlstm's cell passes when its error is within ``INT8_MAX_ERROR`` (from
``fastlstm.testing`` when the int8 path defines it, else the int8 issue's
bound, 2e-2) -- checked before it is timed.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from fastlstm.bench import core
from fastlstm.bench.core import Case, Check, Impl, Prepared
from fastlstm.bench.shapes import LSTM_SHAPES, lstm_flops
from fastlstm.bench.suites import lstm as lstm_suite

MODE = "int8 inference"
DEFAULT_INT8_MAX_ERROR = 2e-2


def int8_tolerance() -> float:
    from fastlstm import testing

    return float(getattr(testing, "INT8_MAX_ERROR", DEFAULT_INT8_MAX_ERROR))


def quantize_fastlstm(fast_lstm):
    """fastlstm's int8 version of one LSTM, through its documented entry points."""
    import fastlstm

    quantized_cls = getattr(fastlstm, "QuantizedLSTM", None)
    if quantized_cls is not None and hasattr(quantized_cls, "from_float"):
        return quantized_cls.from_float(fast_lstm)
    quantize = getattr(fastlstm, "quantize_dynamic", None)
    if quantize is not None:
        return quantize(nn.Sequential(fast_lstm))[0]
    raise core.Unavailable("this fastlstm has no int8 path (fastlstm.quantize_dynamic / QuantizedLSTM)")


def torch_int8(model: nn.LSTM) -> nn.Module:
    # quantize_dynamic swaps children only, hence the container.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(model), {nn.LSTM}, dtype=torch.qint8)[0]


def _error_vs_fp32(st, out, tolerance=None) -> Check:
    from fastlstm.testing import max_abs_error

    err = max_abs_error(out, st.forward_truth()["torch32"])
    passed = None if tolerance is None else err <= tolerance
    return Check(err, tolerance, passed, "" if passed is not False else "int8 error above the bound")


def _fastlstm_impl(ctx, shape, backend: str, reason: str | None) -> Impl:
    def build() -> Prepared:
        if reason is not None:
            raise core.Unavailable(f"backend {backend!r}: {reason}")
        if ctx.device != "cpu":
            raise core.Skipped("the int8 path is CPU-only")
        st = lstm_suite.state(ctx, shape)
        model = quantize_fastlstm(st.fast(backend))
        model.eval()
        x = st.x

        def fn():
            with torch.no_grad():
                return model(x)

        def check() -> Check:
            with torch.no_grad():
                out = model(x)[0]
            return _error_vs_fp32(st, out, int8_tolerance())

        return Prepared(fn=fn, check=check)

    return Impl(f"fastlstm-int8:{backend}", True, build)


def _torch_impl(ctx, shape) -> Impl:
    def build() -> Prepared:
        if ctx.device != "cpu":
            raise core.Skipped("torch's dynamic int8 LSTM is CPU-only")
        st = lstm_suite.state(ctx, shape)
        model = torch_int8(lstm_suite.torch_model(shape).eval())
        x = st.x

        def fn():
            with torch.no_grad():
                return model(x)

        def check() -> Check:
            with torch.no_grad():
                return _error_vs_fp32(st, model(x)[0])

        return Prepared(fn=fn, check=check)

    return Impl("torch-int8", False, build)


def _ort_int8_error(st):
    def on_output(array) -> Check:
        return _error_vs_fp32(st, torch.from_numpy(array))

    return on_output


def plan(ctx) -> list[Case]:
    shapes = ctx.shapes or list(LSTM_SHAPES)
    backends = lstm_suite.fastlstm_backends(ctx)
    cases = []
    for shape in shapes:
        case = Case("int8", shape.name, MODE, {**shape.params(), "dtype": "int8 weights, fp32 activations",
                                                "batch_first": True},
                    flops=lstm_flops(shape, "inference"),
                    note="max error is against torch.nn.LSTM fp32 on the same weights")
        case.impls = [_fastlstm_impl(ctx, shape, b, r) for b, r in backends]
        case.impls.append(_torch_impl(ctx, shape))
        case.impls.append(lstm_suite.ort_impl(ctx, shape, True, _ort_int8_error))
        cases.append(case)
    return cases
