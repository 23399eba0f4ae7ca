"""Encoding many left-padded sequences by length groups (torch only).

The contrastive recommenders encode several extra sets of sequences per step: augmented views (CL4SRec,
SRA-CL) and neighbour prefixes (SRA-CL's 10 per sample). When padding never changes an encoder's state
(SASRec masks padding keys and right-aligns positions; a GRU reads its last real step), rows may be
regrouped freely, so the cost can follow the real lengths instead of the widest row: sort the rows by
length, split them into ``groups`` equal parts and cut each part to its own longest row. On a GPU one group
(one call, fewer kernel launches) is usually best; on a CPU the cost is per token, and short prefixes
(most of Beauty's under max_len 20) make the grouping worth 2x or more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def encode_by_length(encode_last: Callable[[Tensor], Tensor], seqs: list[Tensor], cpu_groups: int) -> list[Tensor]:
    """``encode_last`` maps left-padded items [M, w] (0 = padding) to the state after each row's latest
    item [M, d]; ``seqs`` are sets of left-padded rows [M_i, W_i]. Returns their states [M_i, d], in order,
    from ``cpu_groups`` calls on a CPU (at most one per row), from one call on any other device."""
    W = max(s.shape[1] for s in seqs)
    groups = cpu_groups if seqs[0].device.type == "cpu" else 1
    rows = torch.cat([F.pad(s, (W - s.shape[1], 0)) for s in seqs])  # [M, W]
    n = (rows > 0).sum(1)
    order = n.argsort()
    states = []
    for idx in order.tensor_split(max(1, min(groups, len(rows)))):
        states.append(encode_last(rows[idx, W - max(1, int(n[idx].max())):]))
    h = torch.cat(states)[order.argsort()]  # back to the input order
    return list(h.split([len(s) for s in seqs]))

