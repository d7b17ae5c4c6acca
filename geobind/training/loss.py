"""InfoNCE with a learnable temperature, one-way (stage 1, as in the paper) or both ways (stage
2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InfoNCE"]


class InfoNCE(nn.Module):
    """Contrastive loss between paired unit vectors ``z`` (trainable side) and ``anchor`` (frozen).

    Row ``i`` of ``z`` and of ``anchor`` come from the same place; every other row in the batch is a
    negative. Logits are ``exp(logit_scale) * z @ anchor.T`` with a learnable ``logit_scale``
    (initialised to ``log(1 / temperature)``, clamped at 100 as in CLIP).

    Args:
        temperature: initial temperature.
        learnable: train the temperature.
        bidirectional: average the ``z → anchor`` and ``anchor → z`` cross-entropies.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> z = F.normalize(torch.randn(8, 16), dim=1)
        >>> InfoNCE()(z, z) < InfoNCE()(z, z.roll(1, 0))
        tensor(True)
    """

    def __init__(
        self, temperature: float = 0.07, *, learnable: bool = True, bidirectional: bool = False
    ):
        super().__init__()
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / temperature)), requires_grad=learnable
        )
        self.bidirectional = bidirectional

    def forward(self, z: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale.exp().clamp(max=100) * z @ anchor.T
        target = torch.arange(len(z), device=z.device)
        loss = F.cross_entropy(logits, target)
        if self.bidirectional:
            loss = (loss + F.cross_entropy(logits.T, target)) / 2
        return loss
