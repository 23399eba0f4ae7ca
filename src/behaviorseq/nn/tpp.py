"""Log-likelihood and next-event prediction for any intensity-based TPP model (torch only).

The model contract (``models/tpp/*``): ``encode(batch) -> state`` runs the history once (a dict that
holds at least the batch's ``mask``), and
``intensity(state, dt) -> [B, L, S, K]`` gives lambda_k(t_i + dt[b, i, s]) on the interval after event i
from events 0..i only (right-continuous states, left limits at the next event); optionally
``next_event_intensity(state) -> [B, L-1, K]``, the same at each observed next event, which ``loglik`` then
uses instead of evaluating ``intensity`` at the gaps (NHP has it from its recurrence). Batches hold
``time`` [B, L] (float, since the sequence's first event), ``dtime`` [B, L] (time since the previous
event, 0 at a first event and at padding), ``type`` [B, L] (long, padding = num_types) and ``mask``
[B, L] (bool), padded on the right.

The first event of each sequence is conditioned on (EasyTPP and the NHP code do the same): the
log-likelihood sums, over events i + 1 = 1..L-1,

    log lambda_{k_{i+1}}(t_{i+1}) - int_{t_i}^{t_{i+1}} sum_k lambda_k(t) dt        (NHP Eq. 8)

with the integral by Monte Carlo (``"mc"``: S uniform points per interval, unbiased, as in the NHP paper),
the midpoint rule on S points (``"midpoint"``), or a model's closed-form ``compensator`` (``"exact"``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

INTEGRALS = ("mc", "midpoint", "exact")


class LogLik(NamedTuple):
    log_intensity: Tensor  # [B, L-1] log lambda_{k_{i+1}}(t_{i+1}), 0 where mask is False
    integral: Tensor  # [B, L-1] int_{t_i}^{t_{i+1}} lambda(t) dt, 0 where mask is False
    mask: Tensor  # [B, L-1] True where event i + 1 is real

    @property
    def per_event(self) -> Tensor:  # [B, L-1]
        return self.log_intensity - self.integral


def check_batch(batch: dict[str, Tensor], fields: tuple[str, ...] = ("time", "dtime", "type", "mask")) -> None:
    missing = [f for f in fields if f not in batch]
    if missing:
        raise KeyError(f"TPP batch lacks field(s) {missing}; it has {sorted(batch)}")


def loglik(model, batch: dict[str, Tensor], n_samples: int = 20, method: str = "mc", state=None,
           generator: torch.Generator | None = None) -> LogLik:
    """Per-event log-likelihood terms of a batch (see the module docstring)."""
    if method not in INTEGRALS:
        raise ValueError(f"integral method must be one of {INTEGRALS}, got {method!r}")
    check_batch(batch)
    state = model.encode(batch) if state is None else state
    mask = batch["mask"][:, 1:] & batch["mask"][:, :-1]  # [B, L-1]
    gap = torch.where(mask, batch["dtime"][:, 1:], torch.zeros_like(batch["dtime"][:, 1:]))  # [B, L-1]
    gap = torch.cat([gap, gap.new_zeros(gap.shape[0], 1)], 1)  # [B, L]: interval after event i (L = 1 too)
    next_event = getattr(model, "next_event_intensity", None)  # optional: lambda(t_{i+1}) from the encoder's state
    if method == "exact":
        lam = model.intensity(state, gap[..., None])  # [B, L, 1, K]
        integral = model.compensator(state, gap[..., None])[..., 0, :].sum(-1)  # [B, L]
    else:
        if method == "mc":
            u = torch.rand(*gap.shape, n_samples, device=gap.device, generator=generator)
        else:
            u = (torch.arange(n_samples, device=gap.device, dtype=gap.dtype) + 0.5) / n_samples
            u = u.expand(*gap.shape, n_samples)
        # Two calls (the events; the S points) rather than one on 1 + S points: indexing one big [B, L, 1 + S, K]
        # tensor would cost its backward a full-size zero tensor.
        lam = None if next_event else model.intensity(state, gap[..., None])  # [B, L, 1, K]
        integral = gap * model.intensity(state, u * gap[..., None]).sum((-1, -2)) / n_samples  # [B, L]
    lam = lam[:, :-1, 0] if lam is not None else next_event(state)  # [B, L-1, K] at the events 1..L-1
    k = batch["type"][:, 1:].clamp(max=lam.shape[-1] - 1)  # [B, L-1]; padding clamped, then masked
    lam_k = lam.gather(-1, k[..., None])[..., 0]  # [B, L-1]
    log_lam = torch.where(mask, torch.log(lam_k.clamp_min(1e-12)), torch.zeros_like(lam_k))
    integral = torch.where(mask, integral[:, :-1], torch.zeros_like(lam_k))
    return LogLik(log_lam, integral, mask)


def nll_per_event(model, batch: dict[str, Tensor], n_samples: int = 20, method: str = "mc") -> Tensor:
    """Training loss: minus the log-likelihood, averaged over the batch's predicted events."""
    ll = loglik(model, batch, n_samples, method)
    return -(ll.per_event.sum() / ll.mask.sum().clamp_min(1))


MAX_BLOCKS = 64  # blocks of n_exp candidates a draw may propose (a bound far above the intensity needs many)


@torch.no_grad()
def thinning_predict(model, state, dtime_max: float, n_samples: int = 20, n_exp: int = 50,
                     over_sample: float = 1.5, n_boundary: int = 16,
                     generator: torch.Generator | None = None,
                     noise: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Next-event time and type after every event by thinning (the NHP paper's sampler, Mei & Eisner
    2017, and its minimum-Bayes-risk predictions): ``n_samples`` draws of the next time from the model, their mean
    as the time prediction and ``argmax_k mean_s lambda_k / lambda`` at the drawn times as the type.

    Neural intensities need not decay, so the dominating rate is ``over_sample`` times the largest total
    intensity on ``n_boundary`` points of [0, dtime_max] (EasyTPP's choice); each draw proposes candidates in
    blocks of ``n_exp`` and keeps the first accepted, proposing further blocks while none is accepted and the
    candidates have not passed ``dtime_max`` (one block returned ``dtime_max`` as soon as its candidates ran out:
    biased early when a spike raises the bound). A draw with no candidate accepted before ``dtime_max`` returns
    ``dtime_max``, its type read from the intensities at ``dtime_max``. Returns dt [B, L], type [B, L] and the
    fraction of such draws at each position [B, L] (0 at padding). ``noise`` (exponential and uniform draws, each
    [n_samples, n_exp]) replaces the generator's: the same draws at every position of every row, so a row's
    answer does not depend on the batch it is in (serving); each position's draws stay independent across
    samples, so every prediction has the evaluator's distribution (a further block of draw i takes the noise
    rows of draws i + 1, i + 2, ...: independent of its own, at most ``n_samples`` blocks).
    """
    if noise is not None and not (tuple(noise[0].shape) == tuple(noise[1].shape) == (n_samples, n_exp)):
        raise ValueError(f"thinning_predict: noise must be two [{n_samples}, {n_exp}] tensors, got "
                         f"{tuple(noise[0].shape)} and {tuple(noise[1].shape)}")
    valid = state["mask"]
    (B, L), dev = valid.shape, valid.device
    grid = torch.linspace(0, dtime_max, n_boundary, device=dev).expand(B, L, n_boundary)
    bound = model.intensity(state, grid).sum(-1).amax(-1) * over_sample  # [B, L]
    dt_sum = torch.zeros(B, L, device=dev)
    p_sum = None
    misses = torch.zeros(B, L, device=dev)
    blocks = n_samples if noise is not None else MAX_BLOCKS
    for i in range(n_samples):
        t_acc, lam_acc = torch.full_like(bound, dtime_max), None
        hit_any, done, start = torch.zeros_like(valid), ~valid, torch.zeros_like(bound)
        for b in range(blocks):
            j = (i + b) % n_samples
            e = torch.empty(B, L, n_exp, device=dev).exponential_(1.0, generator=generator) if noise is None \
                else noise[0][j].to(dev).expand(B, L, n_exp)
            tau = start[..., None] + torch.cumsum(e, -1) / bound[..., None]  # [B, L, n_exp] candidate times
            lam = model.intensity(state, tau)  # [B, L, n_exp, K]
            u = torch.rand(B, L, n_exp, device=dev, generator=generator) if noise is None \
                else noise[1][j].to(dev).expand(B, L, n_exp)
            ok = (u * bound[..., None] <= lam.sum(-1)) & (tau <= dtime_max) & ~done[..., None]
            hit = ok.any(-1)
            first = ok.int().argmax(-1)
            t_acc = torch.where(hit, tau.gather(-1, first[..., None])[..., 0], t_acc)
            got = lam.gather(2, first[..., None, None].expand(B, L, 1, lam.shape[-1]))[:, :, 0]  # [B, L, K]
            lam_acc = got if lam_acc is None else torch.where(hit[..., None], got, lam_acc)
            hit_any |= hit
            done |= hit | (tau[..., -1] > dtime_max)  # accepted, or every later candidate is past dtime_max
            if bool(done.all()):
                break
            start = tau[..., -1]
        miss = ~hit_any
        if bool((miss & valid).any()):  # the type of a draw that returns dtime_max: the intensities there
            at_max = model.intensity(state, torch.full((B, L, 1), float(dtime_max), device=dev))[:, :, 0]
            lam_acc = torch.where(miss[..., None], at_max, lam_acc)
        p = lam_acc / lam_acc.sum(-1, keepdim=True).clamp_min(1e-12)
        dt_sum += t_acc
        p_sum = p if p_sum is None else p_sum + p
        misses += (miss & valid).float()
    return dt_sum / n_samples, p_sum.argmax(-1), misses / n_samples



def state_at(state: dict, index: Tensor, shared: tuple[str, ...] = ("keys", "values")) -> dict:
    """An encoded state (``model.encode``) restricted to one interval per sequence, ``index`` [B] (e.g. each
    sequence's last event): every per-interval tensor [B, L, ...] becomes [B, 1, ...]. ``shared`` names the
    entries that are not per interval but what every interval attends to (AttNHP's event keys and values), kept
    whole. Serving predicts after the last event only; thinning at all L intervals cost L times more."""
    mask = state["mask"]
    B, L = mask.shape
    rows = torch.arange(B, device=mask.device)

    def cut(x):
        if isinstance(x, tuple):
            return tuple(cut(y) for y in x)
        if isinstance(x, Tensor) and x.dim() >= 2 and tuple(x.shape[:2]) == (B, L):
            return x[rows, index][:, None]
        return x

    return {k: (v if k in shared else cut(v)) for k, v in state.items()}
