"""Multivariate Hawkes processes with exponential kernels: exact simulation and exact log-likelihood.

Intensity of type i (the parameterisation of ``tick``'s ``SimuHawkesExpKernels``, so that
``adjacency`` is the branching matrix: ``adjacency[i, j]`` is the mean number of type-i children of a
type-j event)::

    lambda_i(t) = mu_i + sum_{t_n < t} a[i, k_n] * b[i, k_n] * exp(-b[i, k_n] * (t - t_n))

Simulation is Ogata's thinning (Ogata 1981), vectorised over sequences: with non-negative kernels the
intensity only decays between events, so the total intensity just after the current time bounds it until
the next event; a candidate is accepted with probability lambda(t) / bound and its type drawn in
proportion to lambda_i(t). The log-likelihood uses the closed-form compensator
``Lambda_i(s, t) = mu_i (t - s) + sum_j a[i, j] S_ij(s) (1 - exp(-b[i, j] (t - s)))`` with the decayed
event counts ``S_ij(s) = sum_{t_n <= s, k_n = j} exp(-b[i, j] (s - t_n))``, updated recursively.

The process is stationary when the spectral radius of ``adjacency`` is below 1; its mean rate is then
``(I - adjacency)^-1 mu`` per type. ``ks_exp1`` tests the time-rescaling theorem: compensator increments
between consecutive events are i.i.d. Exp(1) under the true parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from behaviorseq.data.eventseq import EventSequences


@dataclass(frozen=True)
class HawkesParams:
    """``mu`` [K] baselines (> 0), ``adjacency`` [K, K] (>= 0), ``decay`` [K, K] or a scalar (> 0)."""

    mu: np.ndarray
    adjacency: np.ndarray
    decay: np.ndarray | float = 1.0

    def __post_init__(self) -> None:
        mu = np.atleast_1d(np.asarray(self.mu, dtype=np.float64))
        k = len(mu)
        a = np.asarray(self.adjacency, dtype=np.float64)
        a = a.reshape(k, k) if a.size == k * k else a
        b = np.broadcast_to(np.asarray(self.decay, dtype=np.float64), (k, k)).copy()
        if a.shape != (k, k):
            raise ValueError(f"adjacency must be [{k}, {k}], got {a.shape}")
        if np.any(mu <= 0) or np.any(a < 0) or np.any(b <= 0):
            raise ValueError("Hawkes parameters need mu > 0, adjacency >= 0 and decay > 0")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "adjacency", a)
        object.__setattr__(self, "decay", b)

    @property
    def num_types(self) -> int:
        return len(self.mu)

    def spectral_radius(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self.adjacency))))

    def stationary_rate(self) -> np.ndarray:
        """Mean events per unit time of each type, ``(I - A)^-1 mu`` [K]; needs spectral radius < 1."""
        if self.spectral_radius() >= 1:
            raise ValueError(f"not stationary: spectral radius {self.spectral_radius():.3f} >= 1")
        return np.linalg.solve(np.eye(self.num_types) - self.adjacency, self.mu)

    def unit_rate(self) -> HawkesParams:
        """The same process on a time scale of one event per unit time in all (mu and decay scaled by the total
        stationary rate; the branching matrix is scale-free), so log-likelihoods compare across parameters."""
        g = 1.0 / self.stationary_rate().sum()
        return HawkesParams(self.mu * g, self.adjacency, self.decay * g)

    def to_dict(self) -> dict:
        return {"mu": self.mu.tolist(), "adjacency": self.adjacency.tolist(), "decay": self.decay.tolist()}


def random_hawkes_params(num_types: int, branching: float = 0.6, decay: tuple[float, float] = (0.5, 2.0),
                         mu: tuple[float, float] = (0.1, 0.5), seed: int = 0) -> HawkesParams:
    """Random parameters with spectral radius ``branching`` (< 1), decays and baselines uniform in ranges."""
    if not 0 < branching < 1:
        raise ValueError(f"branching must lie in (0, 1) (a stationary process), got {branching}")
    rng = np.random.default_rng(seed)
    a = rng.random((num_types, num_types)) * (rng.random((num_types, num_types)) < 0.7) + 1e-3
    a *= branching / np.max(np.abs(np.linalg.eigvals(a)))
    return HawkesParams(rng.uniform(*mu, size=num_types), a, rng.uniform(*decay, size=(num_types, num_types)))


@dataclass
class HawkesSample:
    """Simulated sequences and their exact log-likelihood under the parameters that generated them.

    ``loglik[n]`` = sum of log lambda_{k}(t) over the events of sequence n minus the compensator over
    the observation window [0, t_end] (``t_end`` = the sequence's last event when simulated with
    ``max_events`` alone)."""

    seqs: EventSequences
    params: HawkesParams
    loglik: np.ndarray  # [N]
    t_end: np.ndarray  # [N]
    meta: dict = field(default_factory=dict)


def simulate_hawkes(params: HawkesParams, n_seqs: int, t_end: float | None = None, max_events: int | None = None,
                    seed: int = 0) -> HawkesSample:
    """``n_seqs`` independent sequences on [0, t_end], each stopped at ``max_events`` events if given.

    Ogata thinning over all sequences at once: every loop iteration draws one candidate per unfinished
    sequence, so the loop runs (longest sequence's events + its rejections) times."""
    if t_end is None and max_events is None:
        raise ValueError("give t_end, max_events or both")
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    if max_events is None and params.spectral_radius() >= 1:
        raise ValueError("an explosive process (spectral radius >= 1) needs max_events")
    rng = np.random.default_rng(seed)
    K, mu, ab, b = params.num_types, params.mu, params.adjacency * params.decay, params.decay
    horizon = np.inf if t_end is None else float(t_end)
    cap = np.iinfo(np.int64).max if max_events is None else int(max_events)
    t = np.zeros(n_seqs)
    S = np.zeros((n_seqs, K, K))  # decayed counts S_ij just after the current time
    count = np.zeros(n_seqs, dtype=np.int64)
    live = np.arange(n_seqs)
    ev_seq, ev_t, ev_k = [], [], []
    while len(live):
        bound = mu.sum() + np.einsum("ij,nij->n", ab, S[live])  # lambda(t+) >= lambda on (t, next event]
        t_new = t[live] + rng.exponential(1.0, len(live)) / bound
        over = t_new > horizon
        S[live] *= np.exp(-b[None] * (t_new - t[live])[:, None, None])
        t[live] = t_new
        lam = mu + np.einsum("ij,nij->ni", ab, S[live])  # [n, K]
        total = lam.sum(1)
        acc = ~over & (rng.random(len(live)) * bound <= total)
        if acc.any():
            idx, cum = live[acc], np.cumsum(lam[acc], 1)
            k = (rng.random(len(idx))[:, None] * total[acc][:, None] > cum).sum(1)
            k = np.minimum(k, K - 1)  # guard against round-off at the top of the cumulative sum
            S[idx, :, k] += 1.0
            count[idx] += 1
            ev_seq.append(idx), ev_t.append(t[idx]), ev_k.append(k)
        live = live[~over & (count[live] < cap)]
    seq = np.concatenate(ev_seq) if ev_seq else np.zeros(0, np.int64)
    order = np.argsort(seq, kind="stable")  # events were appended in time order within a sequence
    lens = np.bincount(seq, minlength=n_seqs)
    seqs = EventSequences(np.concatenate([[0], np.cumsum(lens)]), np.concatenate(ev_t)[order] if ev_t else np.zeros(0),
                          np.concatenate(ev_k)[order] if ev_k else np.zeros(0, np.int64), K,
                          {"generator": "hawkes_exp", "params": params.to_dict(), "seed": seed,
                           "t_end": t_end, "max_events": max_events})
    last = np.where(lens > 0, seqs.time[np.maximum(seqs.offsets[1:] - 1, 0)], 0.0) if len(seqs.time) else \
        np.zeros(n_seqs)  # no sequence had an event (a short t_end): indexing the empty times failed
    ends = np.full(n_seqs, horizon) if max_events is None else np.where(lens >= cap, last, horizon)
    ends = np.where(np.isinf(ends), last, ends)
    return HawkesSample(seqs, params, hawkes_loglik(params, seqs, ends), ends)


@dataclass
class HawkesTerms:
    """Per-event pieces of the log-likelihood (E events, N sequences, K types)."""

    intensity: np.ndarray  # [E, K] lambda_i(t_n), just before event n
    compensator: np.ndarray  # [E, K] Lambda_i(t_{n-1}, t_n); from 0 for a sequence's first event
    tail: np.ndarray  # [N, K] Lambda_i(t_last, t_end); zero where t_end is the last event

    def log_intensity(self, seqs: EventSequences) -> np.ndarray:
        return np.log(self.intensity[np.arange(seqs.num_events), seqs.type])  # [E]


def hawkes_terms(params: HawkesParams, seqs: EventSequences, t_end: np.ndarray | float | None = None) -> HawkesTerms:
    """Intensities and compensator increments of every event, by the recursion over positions
    (vectorised over sequences: the loop runs over the longest sequence's length)."""
    if seqs.num_types != params.num_types:
        raise ValueError(f"sequences have {seqs.num_types} types, parameters {params.num_types}")
    K, N, lens = params.num_types, len(seqs), seqs.lengths
    mu, a, b, ab = params.mu, params.adjacency, params.decay, params.adjacency * params.decay
    lam, comp = np.zeros((seqs.num_events, K)), np.zeros((seqs.num_events, K))
    S, t_prev = np.zeros((N, K, K)), np.zeros(N)
    for pos in range(int(lens.max()) if N else 0):
        rows = np.flatnonzero(lens > pos)
        e = seqs.offsets[rows] + pos
        dt = seqs.time[e] - t_prev[rows]
        decay = np.exp(-b[None] * dt[:, None, None])  # [n, K, K]
        comp[e] = mu * dt[:, None] + np.einsum("ij,nij->ni", a, S[rows] * (1 - decay))
        S[rows] *= decay
        lam[e] = mu + np.einsum("ij,nij->ni", ab, S[rows])
        S[rows, :, seqs.type[e]] += 1.0
        t_prev[rows] = seqs.time[e]
    tail = np.zeros((N, K))
    if t_end is not None:
        dt = np.broadcast_to(np.asarray(t_end, dtype=np.float64), (N,)) - t_prev
        if np.any(dt < -1e-9 * np.maximum(1.0, np.abs(t_prev))):
            raise ValueError("t_end is before the last event of a sequence")
        dt = np.maximum(dt, 0.0)
        tail = mu * dt[:, None] + np.einsum("ij,nij->ni", a, S * (1 - np.exp(-b[None] * dt[:, None, None])))
    return HawkesTerms(lam, comp, tail)


def intensity_at(params: HawkesParams, times: np.ndarray, types: np.ndarray, at: np.ndarray) -> np.ndarray:
    """lambda(t) [len(at), K] of one sequence at the times ``at``, summed term by term from the
    definition (events strictly before t): the plain reference the recursions are tested against."""
    times, types, at = np.asarray(times, float), np.asarray(types, int), np.asarray(at, float)
    lag = at[:, None] - times[None, :]  # [T, E]
    a, b = params.adjacency[:, types], params.decay[:, types]  # [K, E]
    terms = np.where(lag[:, None, :] > 0, a * b * np.exp(-b * np.maximum(lag, 0)[:, None, :]), 0.0)  # [T, K, E]
    return params.mu + terms.sum(-1)


def hawkes_loglik(params: HawkesParams, seqs: EventSequences, t_end: np.ndarray | float | None = None,
                  condition_on_first: bool = False) -> np.ndarray:
    """Exact log-likelihood per sequence [N] on [0, t_end] (``None``: up to each last event).

    ``condition_on_first``: the likelihood of events 2.. given the first (its log-intensity and the
    compensator before it dropped), the quantity the neural TPP task reports per sequence."""
    terms = hawkes_terms(params, seqs, t_end)
    per_event = terms.log_intensity(seqs) - terms.compensator.sum(1)  # [E]
    if condition_on_first:
        per_event[seqs.offsets[:-1][seqs.lengths > 0]] = 0.0
    return np.bincount(seqs.seq_index(), per_event, minlength=len(seqs)) - terms.tail.sum(1)


def time_rescaled(params: HawkesParams, seqs: EventSequences) -> np.ndarray:
    """Total compensator between consecutive events (from 0 for a first event), [E]: i.i.d. Exp(1)
    under the true parameters (time-rescaling theorem). With a horizon ``t_end``, keep the increments
    that start well before it (or simulate with ``max_events``): the complete gaps inside a fixed window
    are biased towards short ones, since the gap that straddles ``t_end`` is censored."""
    return hawkes_terms(params, seqs).compensator.sum(1)


def ks_exp1(x: np.ndarray) -> tuple[float, float]:
    """One-sample Kolmogorov-Smirnov test of ``x`` against Exp(1): (statistic D, asymptotic p-value)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("ks_exp1 needs at least one value")
    cdf = 1 - np.exp(-x)
    d = float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))
    lam = (np.sqrt(n) + 0.12 + 0.11 / np.sqrt(n)) * d  # Stephens' small-sample correction
    j = np.arange(1, 101)
    p = float(np.clip(2 * np.sum((-1.0) ** (j - 1) * np.exp(-2 * j**2 * lam**2)), 0.0, 1.0)) if lam > 0 else 1.0
    return d, p


def simulate_hawkes_stream(regimes: Sequence[HawkesParams], schedule: Sequence[int], n_seqs: int,
                           t_end: float | None = None, max_events: int | None = None,
                           seed: int = 0) -> list[HawkesSample]:
    """A stream of windows whose parameters shift: window w draws ``n_seqs`` fresh sequences from
    ``regimes[schedule[w]]`` (e.g. ``schedule = [0, 1, 2, 0, 1, 2]`` for recurring regimes A B C A B C).
    Sequences do not carry history across windows, so each window's true log-likelihood is exact."""
    if not regimes or not schedule:
        raise ValueError("a stream needs at least one regime and one window")
    if len({p.num_types for p in regimes}) != 1:
        raise ValueError("all regimes must have the same number of types")
    bad = [r for r in schedule if not 0 <= r < len(regimes)]
    if bad:
        raise ValueError(f"schedule names regimes {bad}, but there are {len(regimes)}")
    out = []
    for w, r in enumerate(schedule):
        s = simulate_hawkes(regimes[r], n_seqs, t_end, max_events, seed=int(np.random.SeedSequence([seed, w]).generate_state(1)[0]))
        s.meta.update(window=w, regime=int(r))
        s.seqs.meta.update(window=w, regime=int(r))
        out.append(s)
    return out
