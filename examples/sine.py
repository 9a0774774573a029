"""Forecast a noisy sine wave with fastlstm and look at the gates.

Run:  PYTHONPATH=. python examples/sine.py   (writes sine_gates.png)
The same as ``fastlstm demo sine``, written out.
"""

import torch
from torch import nn

import fastlstm
from fastlstm.inspect import plot_gates, record_gates

torch.manual_seed(0)

# A noisy sine, split in time: train on the first 2000 points, test on the next 400.
t = torch.arange(2400, dtype=torch.float32) * 0.1
series = torch.sin(t) + 0.1 * torch.randn(2400)
train, test = series[:2000], series[2000:]
WINDOW = 30


def windows(s, starts):
    idx = starts[:, None] + torch.arange(WINDOW + 1)
    return s[idx][:, :WINDOW, None], s[idx][:, WINDOW]


class Forecaster(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fastlstm.LSTM(1, 32, batch_first=True)  # drop-in for nn.LSTM
        self.head = nn.Linear(32, 1)

    def forward(self, x):  # (B, T, 1) -> (B,)
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


model = Forecaster()
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(150):
    x, y = windows(train, torch.randint(0, len(train) - WINDOW, (32,)))
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()

x, y = windows(test, torch.arange(len(test) - WINDOW))
with torch.no_grad():
    print(f"test MSE {((model(x) - y) ** 2).mean():.4f} (noise floor 0.0100)")

    # The fused kernels' own gate activations for one test stretch, (B, T, H) each.
    with record_gates(model) as rec:
        model(test[None, :200, None])
gates = rec.last[0, 0]  # layer 0, forward direction
print("forget gate", tuple(gates.forget.shape), "mean", f"{gates.forget.mean():.3f}")
print("wrote", plot_gates(rec, layer=0, direction=0, path="sine_gates.png"))
