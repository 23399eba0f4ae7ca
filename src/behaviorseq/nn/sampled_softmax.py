"""Sampled softmax with shared negatives, as TensorFlow's ``tf.nn.sampled_softmax_loss`` computes it.

ComiRec (and YouTube DNN, MIND) train with one set of ``num_sampled`` candidates shared by the whole
batch, drawn without duplicates from a fixed proposal Q; each logit is corrected by minus the log of the
candidate's expected count (logQ correction) and sampled candidates equal to a row's true item
("accidental hits") are removed from that row. TF's candidate samplers with ``unique=True`` draw with
replacement until ``num_sampled`` distinct ids were seen after ``tries`` draws, so an item's expected
count is ``1 - (1 - Q(i)) ** tries`` (TF's ``-expm1(tries * log1p(-Q))``); this module does the same.

Proposals: ``log_uniform`` is TF's default Zipf sampler, Q(rank r) = log((r + 2) / (r + 1)) / log(n + 1),
applied to frequency ranks: the official ComiRec code numbers items by decreasing frequency so that
this sampler approximates popularity; here the ranks are taken from the training counts instead, so
item ids need no remapping. One deviation: there, id 0 (padding) is the sampler's class 0, the most probable
one (Q = log 2 / log(n + 1)), so padding is drawn as a negative and every real item sits one rank lower;
here padding has Q = 0 and the most frequent item takes rank 0. ``unigram`` is Q proportional to the
training count, ``uniform`` 1 / n.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PROPOSALS = ("log_uniform", "unigram", "uniform")


def proposal_probs(counts: Tensor, kind: str = "log_uniform") -> Tensor:
    """Q over item ids ``[n_items + 1]`` (id 0, padding, gets 0) from training counts per id."""
    counts = counts.double().clone()
    counts[0] = 0
    n = counts.numel() - 1
    if kind == "uniform":
        q = torch.full_like(counts, 1.0 / n)
    elif kind == "unigram":
        if counts.sum() <= 0:
            raise ValueError("unigram proposal needs positive training counts")
        q = counts / counts.sum()
    elif kind == "log_uniform":
        # Rank 0 = most frequent; ties broken by id (a stable sort), as a frequency-sorted vocab would.
        order = torch.sort(-counts[1:], stable=True).indices  # ids - 1 by decreasing count
        rank = torch.empty(n, dtype=torch.float64)
        rank[order] = torch.arange(n, dtype=torch.float64)
        q = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log((rank + 2) / (rank + 1)) / math.log(n + 1)])
    else:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {kind!r}")
    q[0] = 0
    return q


def sample_unique(q: Tensor, num_sampled: int, generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """``num_sampled`` distinct ids drawn as TF's unique samplers do, and the number of draws it took.

    Draws in chunks (vectorised); the ids are the first ``num_sampled`` distinct values of the stream of
    draws and ``tries`` the stream position of the last of them plus one.
    """
    support = int((q > 0).sum())
    if not 0 < num_sampled <= support:
        raise ValueError(f"cannot draw {num_sampled} distinct ids from a proposal with {support} items")
    draws = torch.empty(0, dtype=torch.long)
    while True:
        more = torch.multinomial(q.float(), max(2 * num_sampled, 64), replacement=True, generator=generator)
        draws = torch.cat([draws, more])
        uniq, inverse = torch.unique(draws, return_inverse=True)
        if uniq.numel() >= num_sampled:
            break
    # First occurrence of each distinct id in the stream, then the earliest num_sampled of them.
    pos = torch.arange(draws.numel())
    first = torch.full((uniq.numel(),), draws.numel(), dtype=torch.long).scatter_reduce(0, inverse, pos, "amin")
    first_sorted, order = torch.sort(first)
    return uniq[order[:num_sampled]], int(first_sorted[num_sampled - 1]) + 1


def log_expected_count(q: Tensor, tries: int, num_sampled: int | None = None) -> Tensor:
    """log(1 - (1 - q) ** tries), TF's expected count of a unique sampler (numerically stable); TF's
    ``ExpectedCountHelper`` takes ``q * num_sampled`` instead when no draw repeated (``tries == num_sampled``)."""
    if num_sampled is not None and tries == num_sampled:
        return torch.log(q * num_sampled)
    return torch.log(-torch.expm1(tries * torch.log1p(-q.clamp(max=1 - 1e-12))))


def sampled_softmax_loss(user: Tensor, target: Tensor, table: Tensor, q: Tensor, num_sampled: int,
                         generator: torch.Generator | None = None) -> Tensor:
    """Mean sampled-softmax loss of ``user`` [B, d] for true items ``target`` [B] (>= 1).

    ``table`` [n_items + 1, d] is the (tied) output embedding with zero, frozen biases as in ComiRec;
    ``q`` [n_items + 1] the proposal (:func:`proposal_probs`). One candidate set serves the batch.
    """
    neg, tries = sample_unique(q, num_sampled, generator)
    neg = neg.to(user.device)
    log_q = log_expected_count(q.to(user.device), tries, len(neg)).to(user.dtype)  # [n_items + 1]
    true_logit = (user * table[target]).sum(-1) - log_q[target]  # [B]
    neg_logit = user @ table[neg].T - log_q[neg]  # [B, S]
    neg_logit = neg_logit.masked_fill(neg[None, :] == target[:, None], -torch.inf)  # accidental hits
    logits = torch.cat([true_logit[:, None], neg_logit], 1)  # the true item is class 0
    return F.cross_entropy(logits, torch.zeros(len(target), dtype=torch.long, device=user.device))
