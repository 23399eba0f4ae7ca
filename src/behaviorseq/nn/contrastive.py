"""NT-Xent (the InfoNCE loss of SimCLR, Chen et al. 2020) over two views of a batch, as used by the
contrastive sequential recommenders (CL4SRec, DuoRec, SRA-CL). Torch only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_logits(z1: Tensor, z2: Tensor, tau: float = 1.0) -> Tensor:
    """Logits [2B, 2B - 1] of the 2B vectors {z1, z2} ([B, d] each, row i of z1 and z2 a positive pair):
    column 0 is the positive (dot product / tau), the other 2B - 2 columns every other vector but the
    row itself, in their original order (the SimCLR / DuoRec ``mask_correlated_samples`` layout)."""
    B = z1.shape[0]
    z = torch.cat([z1, z2], 0)  # [2B, d]
    sim = z @ z.T / tau  # [2B, 2B]
    rows = torch.arange(2 * B, device=z.device)
    partner = (rows + B) % (2 * B)  # [2B] index of each row's positive
    pos = sim[rows, partner].unsqueeze(1)  # [2B, 1]
    keep = torch.ones(2 * B, 2 * B, dtype=torch.bool, device=z.device)
    keep[rows, rows] = False
    keep[rows, partner] = False
    neg = sim[keep].view(2 * B, 2 * B - 2)  # [2B, 2B - 2]
    return torch.cat([pos, neg], 1)  # [2B, 2B - 1]


def nt_xent(z1: Tensor, z2: Tensor, tau: float = 1.0) -> Tensor:
    """Mean cross-entropy of :func:`nt_xent_logits` with the label at column 0."""
    logits = nt_xent_logits(z1, z2, tau)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
