"""Time encodings shared by the neural temporal point process models (torch only)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalTimeEncoding(nn.Module):
    """The Transformer's positional encoding with a continuous time in place of the position:
    ``pe(t)[2j] = sin(t * w_j)``, ``pe(t)[2j + 1] = cos(t * w_j)``, ``w_j = max_period ** (-2j / dim)``.

    THP (Zuo et al. 2020, Eq. 2) and AttNHP (Yang et al. 2022, with EasyTPP's frequencies)
    both use it; THP on the event's time, AttNHP on event and query times. ``t`` [...] -> [..., dim].
    """

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time encoding dim must be even and >= 2, got {dim}")
        self.dim = dim
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(max_period) / dim))
        self.register_buffer("freq", freq, persistent=False)  # [dim / 2]

    def forward(self, t: Tensor) -> Tensor:
        x = t.unsqueeze(-1).float() * self.freq  # [..., dim / 2]
        return torch.stack([x.sin(), x.cos()], dim=-1).flatten(-2)  # [..., dim], sin/cos interleaved


def scaled_softplus(x: Tensor, beta: Tensor) -> Tensor:
    """``beta * log(1 + exp(x / beta))`` (NHP Eq. 2's f_k, THP's softplus with softness beta), stable."""
    return beta * nn.functional.softplus(x / beta)
