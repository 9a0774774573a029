"""The memory-chat core: a byte-level LSTM encoder (memory vectors), an
attention decoder and the encoder-decoder with greedy and beam-search generation.

Every module takes ``lstm_cls`` (default :class:`fastlstm.LSTM`); built with
``torch.nn.LSTM`` instead, the same weights give the same results (the
state_dict keys are identical), which is what the parity tests and benchmarks use.
"""

from __future__ import annotations

import threading
import weakref
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm
from fastlstm.models.chat.tokenizer import ByteTokenizer
from fastlstm.ops.lstm import lstm as lstm_op
from fastlstm.ops.lstm import lstm_recurrence, register_cache
from fastlstm.ops.lstm.step import recurrent_weights, step_into

State = tuple[Tensor, Tensor]


class StepMemory(NamedTuple):
    """What each generation step's attention reads, computed once per source:
    keys (B, S, H), memory already through the combine layer's context half
    (B, S, H), the additive length mask (B, S) and the combine layer's query half, transposed."""

    keys: Tensor
    values: Tensor
    mask: Tensor
    w_query_t: Tensor

    def expand(self, k: int) -> "StepMemory":
        return StepMemory(self.keys.expand(k, -1, -1), self.values.expand(k, -1, -1), self.mask.expand(k, -1),
                          self.w_query_t)


def _mask_bias(lengths: Tensor, T: int, dtype: torch.dtype) -> Tensor:
    """(B, T): 0 where a position is inside its sequence, -inf past it."""
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    return torch.zeros(valid.shape, dtype=dtype).masked_fill_(~valid, float("-inf"))


_WORKSPACE = threading.local()
# Inference-only tables derived from a module's weights (encoder gate table, decoder stepper),
# keyed by the module and validated against its parameters' version counters. Kept outside
# the modules so that copying or pickling a model never carries them.
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
register_cache(_CACHE.clear)  # fastlstm.ops.empty_cache() clears it too


def _workspace(numel: int) -> Tensor:
    """A per-thread float32 buffer reused across encode calls for the input gates (they never
    escape the call): a fresh 100 MB buffer per call costs more in page faults than the gather."""
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.numel() < numel:
        buf = _WORKSPACE.buf = torch.empty(numel)
    return buf[:numel]


def _direct_lstm(lstm: nn.Module) -> bool:
    """True for a plain fastlstm.LSTM that the encoder may call through the op directly."""
    return (type(lstm) is fastlstm.LSTM and lstm.bias and lstm.proj_size == 0 and not lstm.return_gates
            and not lstm._gate_recorders)


class LSTMEncoder(nn.Module):
    """Embedding -> bidirectional LSTM -> attention pooling -> L2-normalised vector.

    ``forward(ids (B, T), lengths (B,))`` returns vectors (B, dim), the LSTM
    outputs (B, T, 2*hidden) (zeros past each length) and the pooled features
    (B, 2*hidden) before projection. ``encode(texts)`` does tokenising and
    batching (texts sorted by length, each batch packed).

    >>> enc = LSTMEncoder()
    >>> enc.encode(["hello", "a longer text"]).shape   # (2, 128)
    """

    def __init__(self, vocab_size: int = ByteTokenizer.vocab_size, embed_dim: int = 64, hidden_size: int = 128,
                 num_layers: int = 1, dim: int = 128, *, lstm_cls=None, tokenizer: ByteTokenizer | None = None) -> None:
        super().__init__()
        lstm_cls = lstm_cls or fastlstm.LSTM
        self.tokenizer = tokenizer or ByteTokenizer()
        self.hidden_size, self.dim = hidden_size, dim
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=ByteTokenizer.PAD)
        self.lstm = lstm_cls(embed_dim, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True)
        self.score = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1, bias=False))
        self.project = nn.Linear(2 * hidden_size, dim)

    @property
    def output_size(self) -> int:
        return 2 * self.hidden_size

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(f"ids must be (B, T) and lengths (B,), got {tuple(ids.shape)} and {tuple(lengths.shape)}")
        if lengths.numel() and int(lengths.min()) < 1:
            raise ValueError("every sequence needs at least one token")
        T = ids.shape[1]
        if _direct_lstm(self.lstm):
            # fastlstm's ops take padded time-major input with lengths: no packing, sorting or
            # unpacking copies, and everything below stays time-major (T, B, ·).
            out_tm = self._lstm_time_major(ids, lengths.to("cpu", torch.int64))
            bias = _mask_bias(lengths.cpu(), T, out_tm.dtype).to(out_tm.device)
            weights = torch.softmax(self.score(out_tm).squeeze(-1).t() + bias, -1)  # (B, T)
            out = out_tm.transpose(0, 1)  # (B, T, 2H) view
        else:
            packed = pack_padded_sequence(self.embedding(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            weights = torch.softmax(self.score(out).squeeze(-1) + _mask_bias(lengths.cpu(), T, out.dtype).to(out.device), -1)
        pooled = torch.bmm(weights.unsqueeze(1), out).squeeze(1)
        return F.normalize(self.project(pooled), dim=-1), out, pooled

    def _lstm_time_major(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """LSTM outputs (T, B, D*H) of padded ids (B, T) through fastlstm's ops."""
        lstm = self.lstm
        ids_tm = ids.t()
        weights = lstm._flat_weights
        if torch.is_grad_enabled() or self.training or lstm.backend not in (None, "auto", "cpu") \
                or ids.device.type != "cpu" or self.embedding.weight.dtype != torch.float32:
            return lstm_op(self.embedding(ids_tm), None, weights, num_layers=lstm.num_layers,
                           bidirectional=lstm.bidirectional, dropout=lstm.dropout, training=self.training,
                           lengths=lengths, backend=lstm.backend)[0]
        # Inference: embedding and layer 0's input projection fold into a (vocab, D*4H) table,
        # so the input gates of every step are one row gather instead of a GEMM over T*B rows.
        table, w_hh = self._gate_table()
        T, B = ids_tm.shape
        D, H = w_hh.shape[0], lstm.hidden_size
        gx = _workspace(T * B * D * 4 * H).view(T * B, D * 4 * H)
        torch.index_select(table, 0, ids_tm.reshape(-1), out=gx)
        gx = gx.view(T, B, D, 4 * H)
        zeros = gx.new_zeros(D, B, H)
        y = lstm_recurrence(gx, w_hh, None, zeros, zeros, lengths, False)[0].view(T, B, D * H)
        if lstm.num_layers == 1:
            return y
        per_layer = len(weights) // lstm.num_layers
        return lstm_op(y, None, weights[per_layer:], num_layers=lstm.num_layers - 1,
                       bidirectional=lstm.bidirectional, lengths=lengths, backend=lstm.backend)[0]

    def _gate_table(self) -> tuple[Tensor, Tensor]:
        """(vocab, D*4H) = embedding · W_ih0ᵀ + b_ih0 + b_hh0 and w_hh0 (D, 4H, H), cached
        against the parameters' version counters (an optimizer step rebuilds them)."""
        lstm = self.lstm
        D = 2 if lstm.bidirectional else 1
        per_dir = len(lstm._flat_weights) // (lstm.num_layers * D)
        layer0 = lstm._flat_weights[: per_dir * D]
        params = [self.embedding.weight] + list(layer0)
        key = tuple((p.data_ptr(), p._version) for p in params)
        cached = _CACHE.get(self)
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            dirs = [layer0[d * per_dir : (d + 1) * per_dir] for d in range(D)]
            w_ih = torch.cat([w[0] for w in dirs])
            bias = torch.cat([w[2] + w[3] for w in dirs])
            table = torch.addmm(bias, self.embedding.weight, w_ih.t()).contiguous()
            w_hh = torch.stack([w[1] for w in dirs]).contiguous()
        _CACHE[self] = (key, (table, w_hh))
        return table, w_hh

    @torch.no_grad()
    def encode(self, texts: Sequence[str | bytes], *, batch_size: int = 64, max_length: int = 1024,
               as_numpy: bool = True) -> np.ndarray | Tensor:
        """L2-normalised float32 memory vectors (n, dim) for ``texts``, in input order.

        >>> vecs = encoder.encode(["I met Alice at Contoso"])   # (1, dim) numpy float32
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode expects a list of texts")
        n = len(texts)
        result = torch.empty(n, self.dim)
        if n:
            sizes = [len(self.tokenizer.to_bytes(t)) for t in texts]
            order = sorted(range(n), key=sizes.__getitem__)  # similar lengths share a batch: less padding
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                ids, lengths = self.tokenizer.batch([texts[i] for i in idx], max_length=max_length)
                vecs, _, _ = self(ids.to(self.embedding.weight.device), lengths)
                result[torch.tensor(idx)] = vecs.float().cpu()
        return result.numpy() if as_numpy else result


class LSTMDecoder(nn.Module):
    """LSTM decoder with (Luong, general) attention over encoder outputs.

    ``forward(tokens (B, T), state, memory, memory_lengths)`` is teacher-forced
    (one LSTM call over all steps) and returns logits (B, T, V) and the final
    state; ``step(tokens (B,), state, step_memory(memory, lengths))`` is one
    generation step (the same math with the per-source half precomputed).

    >>> logits, state = decoder(tokens, state, enc_out, enc_lengths)
    """

    def __init__(self, vocab_size: int = ByteTokenizer.vocab_size, embed_dim: int = 64, hidden_size: int = 256,
                 num_layers: int = 1, memory_size: int = 256, *, lstm_cls=None) -> None:
        super().__init__()
        lstm_cls = lstm_cls or fastlstm.LSTM
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=ByteTokenizer.PAD)
        self.lstm = lstm_cls(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.key = nn.Linear(memory_size, hidden_size, bias=False)
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size)
        self.out = nn.Linear(hidden_size, vocab_size)

    def attend(self, top: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """top (B, T, H) queries; keys (B, S, H); memory (B, S, M); mask (B, S) additive -> logits (B, T, V)."""
        scores = torch.baddbmm(mask.unsqueeze(1), top, keys.transpose(1, 2))
        context = torch.bmm(torch.softmax(scores, -1), memory)
        return self.out(torch.tanh(self.combine(torch.cat([top, context], -1))))

    def forward(self, tokens: Tensor, state: State, memory: Tensor, memory_lengths: Tensor) -> tuple[Tensor, State]:
        out, state = self.lstm(self.embedding(tokens), state)
        mask = _mask_bias(memory_lengths.cpu(), memory.shape[1], memory.dtype).to(memory.device)
        return self.attend(out, self.key(memory), memory, mask), state

    def step_memory(self, memory: Tensor, memory_lengths: Tensor) -> StepMemory:
        """Precomputes the per-source half of attention for :meth:`step`."""
        H = self.hidden_size
        mask = _mask_bias(memory_lengths.cpu(), memory.shape[1], memory.dtype).to(memory.device)
        # combine([top; ctx]) = W_q top + W_c (p @ memory) + b = W_q top + p @ (memory W_cᵀ) + b
        values = memory @ self.combine.weight[:, H:].t()
        return StepMemory(self.key(memory), values, mask, self.combine.weight[:, :H].t())

    def attend_step(self, top: Tensor, mem: StepMemory) -> Tensor:
        """Attention and output for one step: top (B, H) -> logits (B, V) (same math as :meth:`attend`)."""
        scores = torch.baddbmm(mem.mask.unsqueeze(1), top.unsqueeze(1), mem.keys.transpose(1, 2))
        context = torch.bmm(torch.softmax(scores, -1), mem.values).squeeze(1)
        return self.out(torch.tanh(torch.addmm(context + self.combine.bias, top, mem.w_query_t)))

    def step(self, tokens: Tensor, state: State, mem: StepMemory) -> tuple[Tensor, State]:
        """One token per sequence: tokens (B,) -> logits (B, V), new state."""
        out, state = self.lstm(self.embedding(tokens).unsqueeze(1), state)
        return self.attend_step(out.squeeze(1), mem), state


class _FusedDecodeStep:
    """One decoder step for generation: one fused kernel call per layer, then attention
    and the output projection as four torch calls, with no allocation per step.

    Built once per weights (cached on the decoder against the parameters' version
    counters; inference only). The embedding and the first layer's input projection
    are folded into a (V, 4H) table, so layer 0's input gates are a row gather; the
    step kernel (``fastlstm.ops.lstm.step.step_into``, behind the ``lstm_step`` op) is
    called with no per-step module, op-dispatch or autograd overhead; new states go to two preallocated state
    buffers per thread, used in turn (a returned state stays valid until the step after next).
    The combine layer's bias is folded into the attention values (the attention
    weights sum to one), see :meth:`prepare`.
    """

    def __init__(self, decoder: LSTMDecoder) -> None:
        lstm = decoder.lstm
        w = [p.detach() for p in lstm._flat_weights]
        per = len(w) // lstm.num_layers
        self.L, self.H = lstm.num_layers, lstm.hidden_size
        w_ih0, b0 = w[0], w[2] + w[3]
        self.table = torch.addmm(b0, decoder.embedding.weight.detach(), w_ih0.t()).contiguous()
        self.w_hh = [w[l * per + 1].contiguous() for l in range(self.L)]
        self.w_ih_t = [w[l * per].t() for l in range(self.L)]
        self.bias = [w[l * per + 2] + w[l * per + 3] for l in range(self.L)]
        # The packed recurrent weights, owned by prepared objects this stepper holds.
        self._prepared = [recurrent_weights(t) for t in self.w_hh]
        self.packed = [p.packed(t.unsqueeze(0)) for p, t in zip(self._prepared, self.w_hh)]
        self.combine_bias = decoder.combine.bias.detach()
        self.out_w_t = decoder.out.weight.detach().t()
        self.out_b = decoder.out.bias.detach()
        self._local = threading.local()  # state buffers per thread: concurrent sessions share the stepper

    @classmethod
    def for_decoder(cls, decoder: LSTMDecoder) -> "_FusedDecodeStep":
        """The decoder's stepper, rebuilt only when a parameter changed (or was replaced)."""
        key = tuple((p.data_ptr(), p._version) for p in decoder.parameters()) + (torch.get_num_threads(),)
        cached = _CACHE.get(decoder)
        if cached is not None and cached[0] == key:
            return cached[1]
        step = cls(decoder)
        _CACHE[decoder] = (key, step)
        return step

    @staticmethod
    def supported(decoder: LSTMDecoder) -> bool:
        from fastlstm import _backends, _ext

        lstm = decoder.lstm
        if not (isinstance(lstm, fastlstm.LSTM) and _ext.available() and lstm.bias and lstm.proj_size == 0):
            return False
        w = lstm.weight_ih_l0
        if w.device.type != "cpu" or w.dtype != torch.float32 or lstm._gate_recorders or lstm.return_gates:
            return False
        if decoder.combine.bias is None or decoder.out.bias is None:
            return False
        return _backends.resolve(lstm.backend, w.device, w.dtype) == "cpu"

    def _buffers(self, B: int):
        per_batch = self._local.__dict__.setdefault("per_batch", {})
        bufs = per_batch.get(B)
        if bufs is None:
            L, H = self.L, self.H
            hs = [torch.empty(L, B, H) for _ in range(2)]
            cs = [torch.empty(L, B, H) for _ in range(2)]
            bufs = per_batch[B] = (hs, cs, torch.empty(B, 4 * H), torch.empty(B, H))
        return bufs

    def lstm(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        hs, cs, gx, y = self._buffers(tokens.shape[0])
        new = 1 if h is hs[0] else 0  # never write the state being read
        h_new, c_new = hs[new], cs[new]
        torch.index_select(self.table, 0, tokens, out=gx)
        for l in range(self.L):
            if l:
                torch.addmm(self.bias[l], h_new[l - 1], self.w_ih_t[l], out=gx)
            step_into(gx, self.w_hh[l], self.packed[l], h[l].contiguous(), c[l].contiguous(), y, h_new[l], c_new[l])
        return h_new[-1], (h_new, c_new)

    def prepare(self, mem: StepMemory) -> StepMemory:
        """``mem`` with the combine layer's bias folded into its values (for :meth:`attend`)."""
        return mem._replace(values=mem.values + self.combine_bias)

    def attend(self, top: Tensor, mem: StepMemory) -> Tensor:
        """:meth:`LSTMDecoder.attend_step` on a :meth:`prepare`-d memory: logits (B, V)."""
        scores = torch.baddbmm(mem.mask.unsqueeze(1), top.unsqueeze(1), mem.keys.transpose(1, 2))
        context = torch.bmm(torch.softmax(scores, -1), mem.values).squeeze(1)
        return torch.addmm(self.out_b, torch.addmm(context, top, mem.w_query_t).tanh_(), self.out_w_t)


class Seq2SeqLSTM(nn.Module):
    """Encoder-decoder over bytes: the encoder's memory vectors and outputs feed
    the decoder's initial state (through a bridge, plus any carried session
    state) and its attention.

    >>> model = Seq2SeqLSTM()
    >>> model.generate(["hello"], max_length=20)          # list of str
    >>> loss = model.loss(["noisy input"], ["clean target"])
    """

    def __init__(self, vocab_size: int = ByteTokenizer.vocab_size, embed_dim: int = 64, encoder_hidden: int = 128,
                 decoder_hidden: int = 256, encoder_layers: int = 1, decoder_layers: int = 1, dim: int = 128,
                 *, lstm_cls=None) -> None:
        super().__init__()
        self.tokenizer = ByteTokenizer()
        self.encoder = LSTMEncoder(vocab_size, embed_dim, encoder_hidden, encoder_layers, dim,
                                   lstm_cls=lstm_cls, tokenizer=self.tokenizer)
        memory_size = self.encoder.output_size
        self.decoder = LSTMDecoder(vocab_size, embed_dim, decoder_hidden, decoder_layers, memory_size, lstm_cls=lstm_cls)
        self.bridge = nn.Linear(memory_size, 2 * decoder_layers * decoder_hidden)

    # -- pieces ----------------------------------------------------------------

    def encode_batch(self, texts: Sequence[str | bytes], max_length: int = 1024):
        ids, lengths = self.tokenizer.batch(texts, max_length=max_length)
        vectors, memory, pooled = self.encoder(ids.to(self.bridge.weight.device), lengths)
        return vectors, memory, pooled, lengths

    def initial_state(self, pooled: Tensor, carried: State | None = None) -> State:
        """Decoder (h0, c0), each (L, B, H), from the pooled encoding plus a carried session state."""
        L, H = self.decoder.num_layers, self.decoder.hidden_size
        hc = self.bridge(pooled).view(-1, 2, L, H).permute(1, 2, 0, 3)
        h0, c0 = torch.tanh(hc[0]), hc[1]
        if carried is not None:
            h0, c0 = torch.tanh(hc[0] + carried[0]), c0 + carried[1]
        return h0.contiguous(), c0.contiguous()

    # -- training ------------------------------------------------------------

    def loss(self, sources: Sequence[str | bytes], targets: Sequence[str | bytes], carried: State | None = None,
             max_length: int = 512) -> Tensor:
        """Teacher-forced cross-entropy of ``targets`` given ``sources`` (mean per target token)."""
        _, memory, pooled, lengths = self.encode_batch(sources, max_length)
        tgt, tgt_lengths = self.tokenizer.batch(targets, bos=True, eos=True, max_length=max_length)
        tgt = tgt.to(memory.device)
        logits, _ = self.decoder(tgt[:, :-1], self.initial_state(pooled, carried), memory, lengths)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1),
                               ignore_index=ByteTokenizer.PAD)

    # -- generation ----------------------------------------------------------

    def _stepper(self, fused: bool | None):
        use = _FusedDecodeStep.supported(self.decoder) if fused is None else fused
        if use and not _FusedDecodeStep.supported(self.decoder):
            raise ValueError("fused decoding needs a float32 CPU fastlstm.LSTM decoder with biases and the cpu backend")
        return _FusedDecodeStep.for_decoder(self.decoder) if use else None

    def _step(self, fast, tokens, state, mem: StepMemory):
        """One token; with ``fast``, ``mem`` must come from ``fast.prepare``."""
        if fast is None:
            return self.decoder.step(tokens, state, mem)
        top, state = fast.lstm(tokens, state)
        return fast.attend(top, mem), state

    @torch.no_grad()
    def generate_ids(self, sources: Sequence[str | bytes], *, max_length: int = 64, carried: State | None = None,
                     fused: bool | None = None) -> tuple[list[list[int]], State]:
        """Greedy decoding. Returns per source the generated ids (without bos, ending
        at eos when one was produced within ``max_length`` tokens) and the decoder
        state after each sequence's last token (L, B, H) each -- the state a session carries."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        _, memory, pooled, lengths = self.encode_batch(sources)
        B = memory.shape[0]
        state = self.initial_state(pooled, carried)
        mem = self.decoder.step_memory(memory, lengths)
        fast = self._stepper(fused)
        if fast is not None:
            mem = fast.prepare(mem)
        tokens = torch.full((B,), ByteTokenizer.BOS, dtype=torch.int64, device=memory.device)
        if B == 1:  # one sequence: plain ints, no per-step masks
            ids = []
            for _ in range(max_length):
                logits, state = self._step(fast, tokens, state, mem)
                tokens = logits.argmax(-1)
                ids.append(int(tokens))
                if ids[-1] == ByteTokenizer.EOS:
                    break
            return [ids], (state[0].clone(), state[1].clone())
        out = torch.empty(B, max_length, dtype=torch.int64)
        done = torch.zeros(B, dtype=torch.bool)
        final_h, final_c = state[0].clone(), state[1].clone()
        steps = 0
        for t in range(max_length):
            logits, state = self._step(fast, tokens, state, mem)
            tokens = logits.argmax(-1)
            out[:, t] = tokens
            ended = (tokens.cpu() == ByteTokenizer.EOS) & ~done
            steps = t + 1
            if bool(ended.any()):  # keep each sequence's state from its eos step
                final_h[:, ended], final_c[:, ended] = state[0][:, ended], state[1][:, ended]
                done |= ended
                if bool(done.all()):
                    break
        live = ~done
        final_h[:, live], final_c[:, live] = state[0][:, live], state[1][:, live]
        results = []
        for row in out[:, :steps].tolist():
            results.append(row[: row.index(ByteTokenizer.EOS) + 1] if ByteTokenizer.EOS in row else row)
        return results, (final_h, final_c)

    def generate(self, sources: Sequence[str | bytes], *, max_length: int = 64, carried: State | None = None,
                 fused: bool | None = None) -> list[str]:
        """Greedy replies as text (see :meth:`generate_ids`)."""
        ids, _ = self.generate_ids(sources, max_length=max_length, carried=carried, fused=fused)
        return [self.tokenizer.decode(r) for r in ids]

    @torch.no_grad()
    def beam_search(self, source: str | bytes, *, beam_size: int = 4, max_length: int = 64,
                    length_penalty: float = 1.0, carried: State | None = None,
                    fused: bool | None = None) -> list[tuple[list[int], float]]:
        """Beam search for one source: up to ``beam_size`` (ids, score) pairs, best first;
        score = total log-probability / length ** ``length_penalty``. Hypotheses end at
        eos or at ``max_length`` tokens."""
        if beam_size < 1 or max_length < 1:
            raise ValueError("beam_size and max_length must be >= 1")
        _, memory, pooled, lengths = self.encode_batch([source])
        state = self.initial_state(pooled, carried)
        mem = self.decoder.step_memory(memory, lengths)
        fast = self._stepper(fused)
        if fast is not None:
            mem = fast.prepare(mem)
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float]] = []
        tokens = torch.tensor([ByteTokenizer.BOS])
        for t in range(max_length):
            k = len(beams)
            logits, state = self._step(fast, tokens, state, mem.expand(k))
            logp = torch.log_softmax(logits.float(), -1) + torch.tensor([s for _, s in beams]).unsqueeze(1)
            top = torch.topk(logp.flatten(), min(2 * beam_size, logp.numel()))
            V = logp.shape[1]
            keep, parents = [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                parent, token = divmod(flat, V)
                seq = beams[parent][0] + [token]
                if token == ByteTokenizer.EOS or t == max_length - 1:
                    finished.append((seq, score))
                else:
                    keep.append((seq, score))
                    parents.append(parent)
                if len(keep) == beam_size:
                    break
            best_finished = max((s / len(q) ** length_penalty for q, s in finished), default=float("-inf"))
            best_open = max((s / len(q) ** length_penalty for q, s in keep), default=float("-inf"))
            if not keep or (len(finished) >= beam_size and best_finished >= best_open):
                break
            beams = keep
            index = torch.tensor(parents)
            state = (state[0][:, index].contiguous(), state[1][:, index].contiguous())
            tokens = torch.tensor([q[-1] for q, _ in keep])
        ranked = sorted(finished, key=lambda qs: qs[1] / len(qs[0]) ** length_penalty, reverse=True)
        return [(q, s / len(q) ** length_penalty) for q, s in ranked[:beam_size]]
