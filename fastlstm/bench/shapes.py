"""Benchmark shapes and flop counts.

LSTM shapes are ``(B, T, I, H, L, bi)``, batch_first, as in the fused CPU
kernel issue (S1-S5).

Flop count of one LSTM forward (multiply-adds count 2, element-wise work is
left out because it is O(H) against the O(H*(I+H)) matmuls)::

    F_fwd = sum over layers l and directions d of 2 * B * T * 4H * (I_l + H)

with ``I_0 = I`` and ``I_l = D*H`` above the first layer (D = 2 when
bidirectional). Training (forward + backward of a sum loss) counts
``3 * F_fwd``: backward does two matmuls of the forward's size per forward
matmul (input gradients and weight gradients).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LSTMShape:
    name: str
    B: int
    T: int
    I: int
    H: int
    L: int
    bi: bool

    def params(self) -> dict:
        return {"B": self.B, "T": self.T, "I": self.I, "H": self.H, "L": self.L, "bidirectional": self.bi}

    def label(self) -> str:
        return f"{self.B},{self.T},{self.I},{self.H},{self.L},{'bi' if self.bi else 'uni'}"


LSTM_SHAPES = (
    LSTMShape("S1", 1, 288, 32, 128, 2, True),
    LSTMShape("S2", 1, 1440, 32, 128, 2, True),
    LSTMShape("S3", 64, 288, 32, 128, 2, True),
    LSTMShape("S4", 1, 64, 256, 256, 1, False),
    LSTMShape("S5", 32, 128, 256, 512, 1, False),
)

# Small models where users train (issue #22): the fixed cost of a training step.
TRAIN_SMALL_SHAPES = (
    LSTMShape("TS1", 1, 24, 32, 64, 2, True),
    LSTMShape("TS2", 16, 24, 32, 64, 2, True),
    LSTMShape("TS3", 16, 100, 32, 64, 2, True),
)

_TRUE = {"1", "yes", "y", "true", "bi", "bidirectional"}
_FALSE = {"0", "no", "n", "false", "uni", "unidirectional"}


def parse_shape(text: str, name: str | None = None) -> LSTMShape:
    """``"B,T,I,H,L,bi"`` -> LSTMShape; ``bi`` is yes/no (also 1/0, true/false, bi/uni).

    >>> parse_shape("1,288,32,128,2,yes")
    LSTMShape(name='1,288,32,128,2,bi', B=1, T=288, I=32, H=128, L=2, bi=True)
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 6:
        raise ValueError(f"--shapes expects B,T,I,H,L,bi (6 comma-separated fields), got {text!r}")
    values = []
    for field_name, raw in zip("BTIHL", parts[:5]):
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"--shapes {text!r}: {field_name} must be an integer, got {raw!r}") from None
        if value <= 0:
            raise ValueError(f"--shapes {text!r}: {field_name} must be positive, got {value}")
        values.append(value)
    flag = parts[5].lower()
    if flag in _TRUE:
        bi = True
    elif flag in _FALSE:
        bi = False
    else:
        raise ValueError(f"--shapes {text!r}: bi must be yes or no, got {parts[5]!r}")
    shape = LSTMShape("", *values, bi)
    return LSTMShape(name or shape.label(), *values, bi)


def lstm_forward_flops(s: LSTMShape) -> float:
    D = 2 if s.bi else 1
    total = 0
    for layer in range(s.L):
        in_size = s.I if layer == 0 else D * s.H
        total += D * 2 * s.B * s.T * 4 * s.H * (in_size + s.H)
    return float(total)


def lstm_flops(s: LSTMShape, mode: str) -> float:
    f = lstm_forward_flops(s)
    return 3.0 * f if mode == "training" else f


# Sparse attention shapes (embed 128, 4 heads, window (64, 64)).
ATTENTION_EMBED = 128
ATTENTION_HEADS = 4
ATTENTION_WINDOW = (64, 64)
ATTENTION_T_FULL = (288, 1440, 8192)
ATTENTION_T_QUICK = (288, 1440)
ATTENTION_BATCH_FULL = (1, 16)
ATTENTION_BATCH_QUICK = (1,)


def attention_flops(B: int, T: int, heads: int, head_dim: int, window: tuple[int, int] | None) -> float:
    """Forward flops of attention counted on the keys each query may see
    (QK^T and PV: 4 * head_dim per query-key pair); the same count is used for
    every implementation, so GFLOP/s compares useful work."""
    if window is None:
        pairs = T * T
    else:
        left, right = window
        pairs = sum(min(T - 1, i + right) - max(0, i - left) + 1 for i in range(T))
    return float(4 * B * heads * head_dim * pairs)
