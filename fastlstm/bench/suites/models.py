"""The two consumer models.

productivity: ``fastlstm.models.ProductivityLSTM`` (fp32, and int8 through
``fastlstm.runtime`` when present) against the design document's model
(``fastlstm.models.reference.ProductivityLSTM``) in torch fp32, torch dynamic
int8 and ONNX Runtime fp32/int8; batch 1, T = 288 and 1440, inference, the
attention weights returned by every row. fastlstm's rows use the sparse
attention the design document asks for (``attention_window=PRODUCTIVITY_WINDOW``,
query i attends keys i-64..i+64, banded weights); the reference peers run the
document's dense attention, and one more fastlstm row runs dense for the same
comparison. fastlstm's models are loaded with ``from_reference``; the fp32 one
is checked against the reference model with the same window as an attention
mask, in float64 (error rule); the int8 one against its fp32 output (int8 bound).

chat: ``fastlstm.models.LSTMEncoder.encode`` of 64 texts of 20-400 bytes
against the same encoder with every fastlstm.LSTM swapped for its
``torch.nn.LSTM`` twin (``to_torch()``, same weights); checked for parity first.
Greedy generation (``Seq2SeqLSTM.generate_ids``, 64 tokens, batch 1 and 8)
against the same model built on ``torch.nn.LSTM`` (same weights); the ids must match.
"""

from __future__ import annotations

import copy
import random
import warnings

import torch
from torch import nn

from fastlstm.bench import core, peers
from fastlstm.bench.core import Case, Check, Impl, Prepared
from fastlstm.bench.suites import lstm as lstm_suite

MODE = "inference"
# The design document's constructor arguments, with its architecture's sizes.
PRODUCTIVITY_CONFIG = dict(input_dim=32, embedding_dim=64, hidden_dim=128, num_layers=2, output_dim=8)
PRODUCTIVITY_T = (288, 1440)
PRODUCTIVITY_WINDOW = 64  # fastlstm rows: sliding-window attention, +-64 steps (the document's "sparse attention")
CHAT_TEXTS = 64
CHAT_GENERATE_TOKENS = 64


def _models_module(name: str):
    try:
        import fastlstm.models as models
    except ImportError as exc:
        raise core.Unavailable(f"this fastlstm has no fastlstm.models ({exc})") from None
    obj = getattr(models, name, None)
    if obj is None:
        raise core.Unavailable(f"this fastlstm has no fastlstm.models.{name}")
    return obj


def _reference_cls():
    try:
        from fastlstm.models import reference
    except ImportError as exc:
        raise core.Unavailable(f"this fastlstm has no fastlstm.models.reference ({exc})") from None
    cls = getattr(reference, "ProductivityLSTM", None)
    if cls is None:
        raise core.Unavailable("this fastlstm has no fastlstm.models.reference.ProductivityLSTM")
    return cls


def _reference_outputs(ref, x, window) -> list:
    """The reference model's (pattern, forecast, anomaly) with its attention
    restricted to ``window`` by a boolean attention mask (``None``: as written)."""
    from fastlstm.reference.attention import attention_mask

    if window is None:
        return list(ref(x)[:3])
    T = x.shape[1]
    out, _ = ref.lstm(ref.embedding(x))
    seq = out.transpose(0, 1)
    a, _ = ref.attention(seq, seq, seq, attn_mask=~attention_mask(T, T, (window, window)), need_weights=False)
    a = a.transpose(0, 1)
    return [ref.pattern_classifier(a), ref.forecaster(a[:, -1]), ref.anomaly_detector(a)]


class _Productivity:
    """Reference model, input and float64 / fp32 reference outputs for one T."""

    def __init__(self, T: int):
        torch.manual_seed(11)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.ref = _reference_cls()(**PRODUCTIVITY_CONFIG).eval()
        gen = torch.Generator().manual_seed(12 + T)
        self.x = torch.randn(1, T, PRODUCTIVITY_CONFIG["input_dim"], generator=gen)
        self._truth = {}

    def truth(self, window=None):
        """(float64 outputs, fp32 outputs) of the reference, attention limited to ``window``."""
        if window not in self._truth:
            with torch.no_grad():
                self._truth[window] = (_reference_outputs(copy.deepcopy(self.ref).double(), self.x.double(), window),
                                       _reference_outputs(self.ref, self.x, window))
        return self._truth[window]


def _cpu_only(ctx) -> None:
    if ctx.device != "cpu":
        raise core.Skipped("the model suites run on CPU only")


def _prod_state(ctx, T) -> _Productivity:
    _cpu_only(ctx)
    key = ("productivity", T)
    if key not in ctx.cache:
        ctx.cache[key] = _Productivity(T)
    return ctx.cache[key]


def _eval_fn(model, x):
    def fn():
        with torch.no_grad():
            return model(x)
    return fn


def _window_label(window) -> str:
    return "dense attention" if window is None else f"window ±{window}"


def _prod_fastlstm(ctx, T, window=PRODUCTIVITY_WINDOW, ours: bool = True) -> Impl:
    def build() -> Prepared:
        cls = _models_module("ProductivityLSTM")
        st = _prod_state(ctx, T)
        model = cls.from_reference(st.ref, attention_window=window).eval()

        def check() -> Check:
            ref64, ref32 = st.truth(window)
            with torch.no_grad():
                out = list(model(st.x)[:3])
            return lstm_suite.error_rule_check(out, ref32, ref64)

        return Prepared(fn=_eval_fn(model, st.x), check=check)

    return Impl(f"fastlstm ProductivityLSTM ({_window_label(window)})", ours, build)


def _prod_fastlstm_int8(ctx, T, tmp_name: str, window=PRODUCTIVITY_WINDOW) -> Impl:
    def build() -> Prepared:
        import fastlstm

        from fastlstm.bench.suites.int8 import int8_tolerance

        cls = _models_module("ProductivityLSTM")
        for name in ("quantize_dynamic", "export"):
            if not hasattr(fastlstm, name):
                raise core.Unavailable(f"this fastlstm has no fastlstm.{name}")
        try:
            from fastlstm import runtime
        except ImportError as exc:
            raise core.Unavailable(f"this fastlstm has no fastlstm.runtime ({exc})") from None
        st = _prod_state(ctx, T)
        quantized = fastlstm.quantize_dynamic(cls.from_reference(st.ref, attention_window=window).eval())
        path = ctx.workdir / tmp_name
        fastlstm.export(quantized, path)
        model = runtime.load(path)
        x = st.x.numpy()

        def check() -> Check:
            from fastlstm.testing import max_abs_error

            _, ref32 = st.truth(window)
            out = model(x)
            err = max(max_abs_error(torch.as_tensor(a).reshape(r.shape), r) for a, r in zip(out, ref32))
            tol = int8_tolerance()
            return Check(err, tol, err <= tol, "" if err <= tol else "int8 error above the bound")

        return Prepared(fn=lambda: model(x), check=check, extra={"model_bytes": path.stat().st_size})

    return Impl(f"fastlstm int8 (runtime, {_window_label(window)})", True, build)


def _prod_reference(ctx, T, int8: bool) -> Impl:
    def build() -> Prepared:
        st = _prod_state(ctx, T)
        model = st.ref
        if int8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(st.ref), {nn.LSTM, nn.Linear},
                                                               dtype=torch.qint8)

        def check() -> Check:
            from fastlstm.testing import max_abs_error

            ref64, ref32 = st.truth()
            with torch.no_grad():
                out = model(st.x)[:3]
            return Check(max(max_abs_error(a, r) for a, r in zip(out, ref64)))

        return Prepared(fn=_eval_fn(model, st.x), check=check)

    return Impl("reference torch-int8" if int8 else "reference torch", False, build)


def _prod_ort(ctx, T, quantize: bool) -> Impl:
    def build() -> Prepared:
        import numpy as np

        reason = peers.missing_reason("onnxruntime")
        if reason is not None:
            raise core.Missing(reason)
        st = _prod_state(ctx, T)
        base = ctx.workdir / f"productivity_T{T}"
        onnx_path = base.with_suffix(".onnx")
        if not onnx_path.exists():
            peers.export_onnx(st.ref, (st.x,), onnx_path, ["x"])
            np.savez(base.with_suffix(".npz"), x=st.x.numpy())

        def on_output(array) -> Check:
            from fastlstm.testing import max_abs_error

            return Check(max_abs_error(torch.from_numpy(array), st.truth()[0][0]))

        return Prepared(deferred={"onnx": onnx_path, "inputs": base.with_suffix(".npz"), "quantize": quantize,
                                  "on_output": on_output})

    return Impl(f"reference {peers.ORT_INT8 if quantize else peers.ORT_FP32}", False, build)


def plan_productivity(ctx) -> list[Case]:
    cases = []
    for T in PRODUCTIVITY_T:
        case = Case("productivity", f"T={T} B=1", MODE,
                    {"B": 1, "T": T, **PRODUCTIVITY_CONFIG, "fastlstm_attention_window": PRODUCTIVITY_WINDOW},
                    note=f"fastlstm rows: sparse attention, window ±{PRODUCTIVITY_WINDOW} (banded weights); "
                         "reference peers: dense (T x T weights); max error of reference peers is against "
                         "float64; of int8 rows against fp32")
        case.impls = [_prod_fastlstm(ctx, T), _prod_fastlstm_int8(ctx, T, f"productivity_T{T}.safetensors"),
                      _prod_fastlstm(ctx, T, window=None, ours=False),
                      _prod_reference(ctx, T, False), _prod_reference(ctx, T, True),
                      _prod_ort(ctx, T, False), _prod_ort(ctx, T, True)]
        cases.append(case)
    return cases


def chat_texts(n: int = CHAT_TEXTS, seed: int = 3) -> list[str]:
    """``n`` deterministic texts of 20-400 bytes (ASCII words, some non-ASCII)."""
    rng = random.Random(seed)
    words = ["meeting", "notes", "deadline", "coffee", "project", "review", "Zürich", "data", "memory",
             "lstm", "retrieval", "naïve", "schedule", "call", "friday", "report", "ok", "thanks"]
    texts = []
    for _ in range(n):
        target = rng.randint(20, 400)
        text = ""
        while len(text.encode()) < target:
            text += rng.choice(words) + " "
        texts.append(text.encode()[:target].decode(errors="ignore"))
    return texts


def _torch_twin(encoder):
    """The same encoder with every fastlstm.LSTM replaced by its torch.nn.LSTM twin."""
    import fastlstm

    twin = copy.deepcopy(encoder)
    swapped = 0
    for name, module in list(twin.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, fastlstm.LSTM):
                setattr(module, child_name, child.to_torch())
                swapped += 1
    if swapped == 0:
        raise RuntimeError("the encoder has no fastlstm.LSTM to swap")
    return twin.eval()


def _chat_state(ctx):
    _cpu_only(ctx)
    if "chat" not in ctx.cache:
        cls = _models_module("LSTMEncoder")
        torch.manual_seed(5)
        encoder = cls().eval()
        ctx.cache["chat"] = (encoder, _torch_twin(encoder), chat_texts())
    return ctx.cache["chat"]


def _chat_impl(ctx, ours: bool) -> Impl:
    def build() -> Prepared:
        encoder, twin, texts = _chat_state(ctx)
        model = encoder if ours else twin

        def fn():
            with torch.no_grad():
                return model.encode(texts)

        def check() -> Check:
            from fastlstm.testing import PARITY_TOLERANCE, max_abs_error

            with torch.no_grad():
                a, b = torch.as_tensor(encoder.encode(texts)), torch.as_tensor(twin.encode(texts))
            err = max_abs_error(a, b)
            tol = PARITY_TOLERANCE[torch.float32]["atol"]
            return Check(err, tol, err <= tol if ours else None,
                         "" if err <= tol else "differs from the torch.nn.LSTM build")

        return Prepared(fn=fn, check=check, extra={"texts_per_call": len(texts)})

    return Impl("fastlstm LSTMEncoder" if ours else "LSTMEncoder on torch.nn.LSTM", ours, build)


def _generation_state(ctx):
    _cpu_only(ctx)
    if "chat-generate" not in ctx.cache:
        cls = _models_module("Seq2SeqLSTM")
        torch.manual_seed(6)
        fast = cls().eval()
        twin = cls(lstm_cls=nn.LSTM).eval()
        twin.load_state_dict(fast.state_dict())
        ctx.cache["chat-generate"] = (fast, twin, chat_texts(8, seed=4))
    return ctx.cache["chat-generate"]


def _generate_impl(ctx, B: int, ours: bool) -> Impl:
    def build() -> Prepared:
        fast, twin, texts = _generation_state(ctx)
        model, sources = (fast if ours else twin), texts[:B]

        def fn():
            return model.generate_ids(sources, max_length=CHAT_GENERATE_TOKENS)[0]

        def check() -> Check:
            a, b = fast.generate_ids(sources, max_length=CHAT_GENERATE_TOKENS)[0], fn()
            same = a == b
            return Check(0.0 if same else 1.0, 0.0, same if ours else None,
                         "" if same else "generated ids differ from the torch.nn.LSTM build")

        tokens = sum(len(r) for r in fn())
        return Prepared(fn=fn, check=check, extra={"tokens_per_call": tokens})

    return Impl("fastlstm Seq2SeqLSTM" if ours else "Seq2SeqLSTM on torch.nn.LSTM", ours, build)


def plan_chat(ctx) -> list[Case]:
    case = Case("chat", f"encode {CHAT_TEXTS} texts", MODE, {"texts": CHAT_TEXTS, "bytes": "20-400"},
                note="texts per second = 64 / median")
    case.impls = [_chat_impl(ctx, True), _chat_impl(ctx, False)]
    cases = [case]
    for B in (1, 8):
        gen = Case("chat", f"generate B={B}", MODE, {"B": B, "max_tokens": CHAT_GENERATE_TOKENS},
                   note=f"greedy, {CHAT_GENERATE_TOKENS} tokens per sequence (untrained weights: no early eos); "
                        "tokens per second = tokens_per_call / median; error = 1 if the ids differ")
        gen.impls = [_generate_impl(ctx, B, True), _generate_impl(ctx, B, False)]
        cases.append(gen)
    return cases
