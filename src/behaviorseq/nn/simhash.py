"""SimHash with fixed random projections, and SDIM's bucket tables (Cao et al., CIKM 2022, Sec. 4.2-4.4).

h_k(x) = sign(r_k^T x) for m fixed Gaussian directions r_k; the m bits form m/tau signatures of tau
bits, so each signature puts x in one of 2^tau buckets. Two vectors at angle theta share one bit with
probability 1 - theta/pi, so they share a whole signature with probability (1 - theta/pi)^tau (Eq. 13).

A bucket table holds, per sequence, signature and bucket, the sum of the sequence's (unpadded) vectors
that hash there; SDIM's long-term interest of a query is the mean over signatures of the l2-normalised
sum in the query's bucket (Eq. 12). Building the table once and looking queries up in it is the BSE
serving split (Sec. 4.4); :func:`query_interest` computes the same quantity for a few queries without
the table (only the queries' buckets are summed), which is what training with one target per row needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_LIMIT = 1024  # the most hash bits for which codes() uses the [m, m / tau] block matrix (1.4 MB)


class SimHash(nn.Module):
    """(m, tau) SimHash over ``dim``-vectors with a fixed projection buffer (never trained or resampled)."""

    def __init__(self, dim: int, n_hashes: int = 48, tau: int = 3, seed: int = 0):
        super().__init__()
        if n_hashes % tau:
            raise ValueError(f"n_hashes ({n_hashes}) must be a multiple of tau ({tau})")
        self.n_hashes, self.tau = n_hashes, tau
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(n_hashes, dim, generator=g))  # R [m, dim]
        self.register_buffer("bit_weights", 2 ** torch.arange(tau))  # kept in the state dict for old checkpoints
        # bit_weights as an [m, m / tau] block matrix: codes by one small matmul, 2x faster than an int64
        # multiply-and-sum over [..., m / tau, tau] (exact: the sums are integers below 2^tau). The matrix is
        # quadratic in m, so beyond BLOCK_LIMIT bits (10 GB at m = 90,000) codes use the per-signature form.
        weights = (torch.block_diag(*[self.bit_weights.float()[:, None]] * self.n_signatures)
                   if n_hashes <= BLOCK_LIMIT else None)
        self.register_buffer("code_weights", weights, persistent=False)

    @property
    def n_signatures(self) -> int:
        return self.n_hashes // self.tau

    @property
    def n_buckets(self) -> int:
        return 2**self.tau

    def bits(self, x: Tensor) -> Tensor:
        """[..., dim] -> bool [..., m]; a projection of exactly 0 gives bit 0 (FuxiCTR's argmax tie rule). In
        float32 always: under AMP autocast the product ran in bf16 / fp16 and flipped bits that evaluation and
        serving (float32) do not."""
        with torch.autocast(x.device.type, enabled=False):
            return (x.detach().float() @ self.projection.float().T) > 0

    def codes(self, x: Tensor) -> Tensor:
        """[..., dim] -> bucket ids int64 [..., m / tau] in [0, 2^tau), bit b of a signature weighing 2^b
        (float32 products outside autocast: bf16 holds whole numbers exactly only up to 256, tau >= 9 merged
        buckets)."""
        with torch.autocast(x.device.type, enabled=False):
            if self.code_weights is not None:
                return (self.bits(x).to(self.code_weights.dtype) @ self.code_weights).long()
            bits = self.bits(x).view(*x.shape[:-1], self.n_signatures, self.tau)
            return (bits.float() @ self.bit_weights.to(bits.device, torch.float32)).long()


ASSIGN_LIMIT = 2**26  # "auto": the matmul form while its [B, S, n_buckets, L] buffer stays under 256 MB (fp32)


def bucket_table(values: Tensor, codes: Tensor, mask: Tensor, n_buckets: int, normalize: bool = True,
                 eps: float = 1e-12, method: str = "auto") -> Tensor:
    """Per-bucket sums of a sequence's vectors, optionally l2-normalised (SDIM Eq. 12, inner part).

    Args:
        values [B, L, D]; codes int64 [B, L, S] (bucket of each vector under each signature);
        mask bool [B, L], True on real positions: padding contributes nothing (FuxiCTR issue #72's bug);
        method: both forms have static shapes (no nonzero / embedding_bag, no loop over the batch) and
            agree to rounding (a test).
            "scatter": each vector is added into its S buckets by one index-add per signature: B L S D
                additions and nothing larger than the [B, S * n_buckets, D] output.
            "matmul": a 0/1 assignment matrix [B, S * n_buckets, L] times the values: n_buckets times the
                arithmetic and a [B, S, n_buckets, L] buffer (1 GB at B = 256, L = 8k), but dense BLAS,
                about 2-3x faster than "scatter" on CPU at B = 64, L = 2k, and free of atomics, so bitwise
                deterministic on GPU, where an index-add's summation order is not.
            "auto": "matmul" while its buffer has at most ASSIGN_LIMIT elements, else "scatter".
    Returns: [B, S, n_buckets, D]; an empty bucket stays zero after normalisation (eps guard). A row's
    table depends only on that row."""
    B, L, D = values.shape
    S = codes.shape[-1]
    if method == "auto":
        method = "matmul" if B * S * n_buckets * L <= ASSIGN_LIMIT else "scatter"
    if method == "matmul":
        assign = values.new_zeros(B, S, n_buckets, L)
        assign.scatter_(2, codes.transpose(1, 2).unsqueeze(2),
                        mask.to(values.dtype)[:, None, None, :].expand(B, S, 1, L))
        table = torch.bmm(assign.view(B, S * n_buckets, L), values).view(B, S, n_buckets, D)
    elif method == "scatter":
        v = (values * mask.unsqueeze(-1).to(values.dtype)).reshape(B * L, D)  # padding adds zeros
        row = torch.arange(B, device=codes.device)[:, None] * (S * n_buckets)  # [B, 1]
        slot = codes + torch.arange(S, device=codes.device) * n_buckets  # [B, L, S]: s * n_buckets + bucket
        table = values.new_zeros(B * S * n_buckets, D)
        for s in range(S):  # m / tau signatures (16 in the paper): each adds all B x L vectors at once
            table = table.index_add(0, (row + slot[:, :, s]).reshape(-1), v)
        table = table.view(B, S, n_buckets, D)
    else:
        raise ValueError(f"method must be 'auto', 'scatter' or 'matmul', got {method!r}")
    return F.normalize(table, dim=-1, eps=eps) if normalize else table


def lookup(table: Tensor, codes: Tensor) -> Tensor:
    """Mean over signatures of each query's bucket vector (SDIM Eq. 12, outer mean).

    Args: table [B, S, n_buckets, D]; codes int64 [B, C, S] (C queries per row).
    Returns: [B, C, D]."""
    B, S, nb, D = table.shape
    C = codes.shape[1]
    idx = codes.transpose(1, 2).unsqueeze(-1).expand(B, S, C, D)  # [B, S, C, D]
    return table.gather(2, idx).mean(dim=1)


def query_interest(values: Tensor, codes: Tensor, mask: Tensor, query_codes: Tensor, eps: float = 1e-12) -> Tensor:
    """``lookup(bucket_table(values, codes, mask, n), query_codes)`` without the table: per query and
    signature, the l2-normalised sum of the sequence vectors in the query's bucket, averaged over signatures.

    Args: values [B, L, D]; codes int64 [B, L, S]; mask bool [B, L]; query_codes int64 [B, C, S].
    Returns: [B, C, D], equal to the table path to rounding (a test). The work is one [B, S C, L] 0/1
    match matrix times the values: 2^tau / C times less than the table's [B, S 2^tau, L] product, so
    about 8x less at tau = 3 with one target per training row."""
    B, L, D = values.shape
    C, S = query_codes.shape[1], query_codes.shape[2]
    match = codes.transpose(1, 2).unsqueeze(2) == query_codes.transpose(1, 2).unsqueeze(-1)  # [B, S, C, L]
    match = (match & mask[:, None, None, :]).to(values.dtype).reshape(B, S * C, L)
    sums = torch.bmm(match, values).view(B, S, C, D)  # never expands the values per signature
    return F.normalize(sums, dim=-1, eps=eps).mean(dim=1)


def collision_probability(cos: Tensor | float, tau: int) -> Tensor:
    """P(two vectors with cosine ``cos`` share a tau-bit signature) = (1 - arccos(cos) / pi)^tau (Eq. 13)."""
    cos = torch.as_tensor(cos, dtype=torch.float64).clamp(-1.0, 1.0)
    return (1.0 - torch.arccos(cos) / math.pi) ** tau
