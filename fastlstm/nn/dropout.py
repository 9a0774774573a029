"""Dropout whose training-mode mask comes from the counter-based CPU kernel
(``fastlstm::dropout``): a drop-in for ``nn.Dropout`` (same constructor, no
parameters), several times faster than torch's on CPU float tensors."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fastlstm.ops.dropout import dropout


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the fused CPU kernel in training (``inplace=True`` and
    other devices keep torch's dropout). The mask is seeded from torch's default
    generator, so ``torch.manual_seed`` fixes it, but it is not torch's mask.

    >>> drop = Dropout(0.2)
    """

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.inplace:
            return F.dropout(input, self.p, self.training, self.inplace)
        return dropout(input, self.p)
