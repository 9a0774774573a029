"""Seeing inside the cell: gate activations recorded from the fused kernels.

The fused recurrence already writes every step's gate activations and cell
state for backward; recording just asks for them and keeps them, so the values
are the kernels' own (no second, slower pass) and nothing is paid when no
recording is active.

>>> with fastlstm.inspect.record_gates(model) as rec:
...     model(x)
>>> rec.last[0, 0].forget.shape          # layer 0, direction 0: (B, T, H)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ["GateRecord", "GateRecording", "LayerGates", "plot_gates", "record_gates"]

GATE_NAMES = ("input", "forget", "candidate", "output", "cell")


@dataclass
class LayerGates:
    """Activations of one layer and direction, each ``(B, T, H)`` in batch order.

    ``input``, ``forget``, ``output`` are the sigmoid gates, ``candidate`` the
    tanh cell input g, ``cell`` the cell state after each step. Time runs in
    the input's order for both directions (the reverse direction's step for
    position t sits at t). Steps past a sequence's length are zero.
    """

    layer: int
    direction: int
    input: Tensor
    forget: Tensor
    candidate: Tensor
    output: Tensor
    cell: Tensor
    lengths: Tensor | None = None

    def unpadded(self, b: int) -> dict[str, Tensor]:
        """Sequence ``b``'s activations without padding: name -> ``(length_b, H)``."""
        n = self.input.shape[1] if self.lengths is None else int(self.lengths[b])
        return {name: getattr(self, name)[b, :n] for name in GATE_NAMES}


class GateRecord:
    """The gates of every layer and direction from one forward call of a
    :class:`fastlstm.LSTM`; index with ``record[layer, direction]``.

    >>> out, (h, c), rec = fastlstm.LSTM(4, 8, return_gates=True)(torch.randn(5, 2, 4))
    >>> rec[0, 0].cell.shape   # (2, 5, 8)
    """

    def __init__(self, layers: list[LayerGates], lengths: Tensor | None) -> None:
        self._layers = {(g.layer, g.direction): g for g in layers}
        self.lengths = lengths
        self.num_layers = 1 + max(g.layer for g in layers)
        self.num_directions = 1 + max(g.direction for g in layers)

    @classmethod
    def from_kernels(cls, raw: list, lengths: Tensor | None, hidden_size: int) -> "GateRecord":
        """Builds a record from :func:`fastlstm.ops.lstm`'s ``record`` list:
        ``(layer, gates (T, B, D, 4H), cells (T, B, D, H))`` per layer."""
        H = hidden_size
        layers = []
        mask = None
        for layer, gates, cells in raw:
            if gates.numel() == 0:
                raise RuntimeError("the LSTM backend did not return gate activations to record")
            T, B, D, _ = gates.shape
            if lengths is not None and mask is None:
                steps = torch.arange(T).unsqueeze(1)
                mask = (steps < lengths.cpu().unsqueeze(0)).to(gates.device)  # (T, B)
            for d in range(D):
                act = gates[:, :, d]
                parts = [act[..., k * H : (k + 1) * H] for k in range(4)] + [cells[:, :, d]]
                if mask is not None:
                    # The kernels need not write steps past a sequence's end.
                    parts = [torch.where(mask.unsqueeze(-1), p, torch.zeros_like(p)) for p in parts]
                i, f, g, o, c = (p.transpose(0, 1).contiguous() for p in parts)
                layers.append(LayerGates(layer, d, i, f, g, o, c, lengths))
        return cls(layers, lengths)

    def __getitem__(self, key: tuple[int, int]) -> LayerGates:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError("index a GateRecord with [layer, direction]")
        if key not in self._layers:
            raise KeyError(
                f"no gates for layer {key[0]}, direction {key[1]} "
                f"(recorded {self.num_layers} layers x {self.num_directions} directions)"
            )
        return self._layers[key]

    def __iter__(self) -> Iterator[LayerGates]:
        return iter(self._layers.values())

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        g = self[0, 0]
        B, T, H = g.input.shape
        return f"GateRecord(layers={self.num_layers}, directions={self.num_directions}, B={B}, T={T}, H={H})"


class GateRecording:
    """What :func:`record_gates` collected: one :class:`GateRecord` per forward
    call of each recorded LSTM, in call order (``names[i]`` is the submodule
    name of ``records[i]``)."""

    def __init__(self) -> None:
        self.records: list[GateRecord] = []
        self.names: list[str] = []

    @property
    def last(self) -> GateRecord:
        if not self.records:
            raise LookupError("nothing recorded: no fastlstm.LSTM forward ran inside record_gates()")
        return self.records[-1]

    def for_module(self, name: str) -> list[GateRecord]:
        return [r for r, n in zip(self.records, self.names) if n == name]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> GateRecord:
        return self.records[i]


class _Sink:
    """Appended to an LSTM's ``_gate_recorders``; tags each record with the module's name."""

    def __init__(self, recording: GateRecording, name: str) -> None:
        self.recording, self.name = recording, name

    def append(self, record: GateRecord) -> None:
        self.recording.records.append(record)
        self.recording.names.append(self.name)


@contextlib.contextmanager
def record_gates(module: nn.Module) -> Iterator[GateRecording]:
    """Records gate activations of every :class:`fastlstm.LSTM` in ``module``
    for the forward calls run inside the block.

    Records are ``(B, T, H)`` per gate (see :class:`LayerGates`), taken from the
    fused kernels. Outside the block the modules run exactly as before.

    >>> with record_gates(model) as rec:
    ...     model(x)
    >>> rec.last[0, 1].forget   # layer 0, reverse direction, (B, T, H)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"record_gates expects an nn.Module, got {type(module).__name__}")
    # fastlstm.LSTM is the module that keeps ``_gate_recorders`` (no import of
    # fastlstm.nn here: nn.lstm imports this module's GateRecord).
    targets = [(name, m) for name, m in module.named_modules() if isinstance(getattr(m, "_gate_recorders", None), list)]
    if not targets:
        raise ValueError(
            f"record_gates: {type(module).__name__} contains no fastlstm.LSTM "
            "(torch.nn.LSTM can be converted with fastlstm.LSTM.from_torch)"
        )
    recording = GateRecording()
    sinks = []
    for name, m in targets:
        sink = _Sink(recording, name)
        m._gate_recorders.append(sink)
        sinks.append((m, sink))
    try:
        yield recording
    finally:
        for m, sink in sinks:
            m._gate_recorders.remove(sink)


def plot_gates(
    record: GateRecord | GateRecording,
    layer: int = 0,
    direction: int = 0,
    path: str = "gates.png",
    *,
    batch: int = 0,
    title: str | None = None,
) -> str:
    """Writes a PNG heatmap (hidden unit x time) of the forget, input and output
    gates and the cell state of one layer/direction for sequence ``batch``.
    Needs matplotlib (``pip install fastlstm[plot]``). Returns ``path``.

    >>> with record_gates(model) as rec: model(x)
    >>> plot_gates(rec, layer=0, direction=0, path="gates.png")
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # optional dependency
        raise ImportError("plot_gates needs matplotlib: pip install matplotlib") from e
    if isinstance(record, GateRecording):
        record = record.last
    if not isinstance(record, GateRecord):
        raise TypeError(f"plot_gates expects a GateRecord or GateRecording, got {type(record).__name__}")
    gates = record[layer, direction]
    seq = gates.unpadded(batch)
    panels = [("forget gate", seq["forget"], 0.0, 1.0, "viridis"),
              ("input gate", seq["input"], 0.0, 1.0, "viridis"),
              ("output gate", seq["output"], 0.0, 1.0, "viridis")]
    cell = seq["cell"].detach().double().cpu().numpy()
    bound = max(float(abs(cell).max()) if cell.size else 1.0, 1e-6)
    panels.append(("cell state", seq["cell"], -bound, bound, "coolwarm"))
    fig = Figure(figsize=(10, 8), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (name, values, lo, hi, cmap) in zip(axes, panels):
        image = ax.imshow(values.detach().double().cpu().numpy().T, aspect="auto", origin="lower",
                          vmin=lo, vmax=hi, cmap=cmap, interpolation="nearest")
        ax.set_ylabel(f"{name}\nunit")
        fig.colorbar(image, ax=ax)
    axes[-1].set_xlabel("time step")
    fig.suptitle(title or f"layer {layer}, direction {'reverse' if direction else 'forward'}, sequence {batch}")
    fig.savefig(path, dpi=80)
    return path
