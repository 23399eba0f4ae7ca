"""Planted fraud-ring click streams (FinDeepBehaviorCluster, Min et al., arXiv 2101.04285; brief section 1).

One row per transaction: the session's page-type click stream before checkout (the last event is always
the checkout page, id 1), the gaps between clicks, the risk experts' "intuitive" features of the
transaction, and the ground truth. Page ids are ``1..n_page_types`` (0 = padding); sequences are
right-padded to ``max_len`` and keep the last ``max_len`` events of a longer session.

Populations (everything reproducible from ``seed``, vectorised over sessions and events):

* **normal** sessions: a first-order Markov chain over the browsing pages ``2..n_page_types`` (Dirichlet
  rows with ``markov_concentration``; a small value gives a peaked chain with popular paths), a geometric
  number of clicks (mean ``mean_len``) then checkout; lognormal dwell times (heavy tail) scaled by a
  lognormal per-user speed. A share ``shared_fraction`` are households/offices (several accounts on one
  device, IP and address) and a share ``new_account_fraction`` are new accounts (a sign-up promotion).
* **benign scripted** groups (``n_benign_scripted``, ring-sized): automation and power users replaying a
  saved path (edit noise ``edit_prob``) with machine-like dwell, so the session looks like a ring's, but
  with ordinary expert features.
* **fraud rings** (``n_rings``, sizes in ``[ring_size_min, ring_size_max]``): a scripted path sampled from
  the chain (plausible pages) with edit noise, near-constant dwell (coefficient of variation
  ``ring_dwell_cv``, so a short time to checkout) and correlated expert features by ring type, cycling
  ``farm`` (new accounts, device farm, drop address, many orders), ``takeover`` (aged hijacked accounts, a
  new payment instrument, one attacker device) and ``reship`` (young accounts, proxies, reshipping
  addresses). ``human_ring_fraction`` of the rings are worked by hand (human lognormal dwell, only the
  path is scripted) and ``copy_fraction`` of the rings replay a benign scripted group's path and dwell. The
  two are drawn independently, so a ring can be both: it replays the group's path by hand, with human dwell
  (with the defaults, in seeds 1, 2, 4 and 5; such a ring's stream is the group's path, not its timing).

Why neither view alone recovers every ring (the honest part; measured by ``benchmarks/fdbc.py``):

* sequence only: a ring that copies a benign scripted group is the same click stream as that group (its
  path only, when the ring is also hand-worked), and a hand-worked ring has human dwell times, so its path is
  its only sequence signal;
* expert features only: the features are counts, ages and amounts with little ring identity (a ring's
  levels sit within ``ring_level_spread`` of its type's mid-range), so rings of one type overlap each
  other; takeover rings (aged accounts, shared device) sit next to households/offices, and
  reship rings (many accounts per IP) next to offices.

Labels are lagged: a fraud transaction gets a chargeback with probability ``chargeback_rate`` (a benign one
with ``benign_chargeback_rate``, e.g. friendly fraud), ``Exp(label_delay_days)`` after its day (uniform over
``window_days``); at ``as_of`` (default: the window's end) only the chargebacks already arrived are known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from behaviorseq.data.store import ragged_arange
from behaviorseq.data.synthetic._checks import is_int, is_real

CHECKOUT = 1
FEATURES = ("account_age_days", "amount_usd", "orders_24h", "accounts_per_device", "accounts_per_ip",
            "accounts_per_address", "declined_7d", "payment_age_days")
RING_TYPES = ("farm", "takeover", "reship")
# The expert features each ring type shifts away from the normal population (what rules should name): those whose
# mean over the type's ring members is more than half a normal-population sd from the normal mean (checked by
# tests/test_fdbc.py on the default config; a session 17 review found reship's amount_usd, orders_24h and
# declined_7d missing).
PLANTED = {
    "farm": ("account_age_days", "payment_age_days", "accounts_per_device", "accounts_per_ip",
             "accounts_per_address", "orders_24h", "declined_7d", "amount_usd"),
    "takeover": ("payment_age_days", "accounts_per_device", "accounts_per_address", "orders_24h",
                 "declined_7d", "amount_usd"),
    "reship": ("account_age_days", "payment_age_days", "accounts_per_ip", "accounts_per_address", "amount_usd",
               "orders_24h", "declined_7d"),
}


@dataclass(frozen=True)
class ClickstreamConfig:
    """Parameters of :func:`generate_clickstream`; every value is checked on construction (``ValueError``).

    Attributes:
        n_normal: normal sessions. n_page_types: page ids ``1..n`` (1 = checkout), ``>= 3``.
        max_len: stored events per session (the last ones, checkout included), ``>= 2``.
        mean_len: mean clicks before checkout of a normal session (geometric), ``>= 1``.
        markov_concentration: Dirichlet concentration of the chain's rows, ``> 0``.
        dwell_median_s, dwell_sigma: human dwell times are lognormal(log median, sigma) seconds.
        n_rings, ring_size_min, ring_size_max: fraud rings and their size range.
        n_benign_scripted: benign automation groups (sizes from the ring range).
        script_len_min, script_len_max: clicks of a scripted path (before checkout).
        edit_prob: per-click probability of an edit (a third each: deletion, substitution, insertion).
        machine_dwell_min_s, machine_dwell_max_s: range of a script's constant dwell.
        ring_dwell_cv: coefficient of variation of machine-like dwell times.
        ring_level_spread: how far a ring's feature levels move from its type's mid-range (0: every ring of a
            type has the same feature distribution; 1: levels uniform over the type's range).
        human_ring_fraction: share of rings with human dwell. copy_fraction: share of rings replaying a
            benign scripted group's path (needs ``n_benign_scripted >= 1`` when positive).
        shared_fraction: normal sessions from households/offices. new_account_fraction: normal new accounts.
        chargeback_rate: P(label) of a fraud session. benign_chargeback_rate: P(label) of a benign one.
        label_delay_days: mean chargeback delay. window_days: transaction days are uniform in the window.
        seed: seed of ``numpy.random.default_rng``.
    """

    n_normal: int = 6000
    n_page_types: int = 50
    max_len: int = 64
    mean_len: float = 18.0
    markov_concentration: float = 0.3
    dwell_median_s: float = 20.0
    dwell_sigma: float = 1.0
    n_rings: int = 8
    ring_size_min: int = 50
    ring_size_max: int = 150
    n_benign_scripted: int = 4
    script_len_min: int = 8
    script_len_max: int = 16
    edit_prob: float = 0.1
    machine_dwell_min_s: float = 0.5
    machine_dwell_max_s: float = 3.0
    ring_dwell_cv: float = 0.05
    ring_level_spread: float = 0.25
    human_ring_fraction: float = 0.25
    copy_fraction: float = 0.25
    shared_fraction: float = 0.08
    new_account_fraction: float = 0.08
    chargeback_rate: float = 0.6
    benign_chargeback_rate: float = 0.004
    label_delay_days: float = 30.0
    window_days: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        lows = {"n_normal": 1, "n_page_types": 3, "max_len": 2, "n_rings": 0, "ring_size_min": 1, "ring_size_max": 1,
                "n_benign_scripted": 0, "script_len_min": 1, "script_len_max": 1, "seed": 0}
        for name, low in lows.items():
            v = getattr(self, name)
            if not is_int(v) or v < low:
                raise ValueError(f"ClickstreamConfig.{name} must be an int >= {low}, got {v!r}")
        positive = ("mean_len", "markov_concentration", "dwell_median_s", "dwell_sigma", "machine_dwell_min_s",
                    "machine_dwell_max_s", "label_delay_days", "window_days")
        fractions = ("edit_prob", "ring_dwell_cv", "ring_level_spread", "human_ring_fraction", "copy_fraction",
                     "shared_fraction",
                     "new_account_fraction", "chargeback_rate", "benign_chargeback_rate")
        for name in positive + fractions:
            v = getattr(self, name)
            if not is_real(v):
                raise ValueError(f"ClickstreamConfig.{name} must be a finite number, got {v!r}")
            if name in positive and v <= 0:
                raise ValueError(f"ClickstreamConfig.{name} must be > 0, got {v}")
            if name in fractions and not 0.0 <= v <= 1.0:
                raise ValueError(f"ClickstreamConfig.{name} must be in [0, 1], got {v}")
        if self.mean_len < 1:
            raise ValueError(f"ClickstreamConfig.mean_len must be >= 1, got {self.mean_len}")
        for lo, hi in (("ring_size_min", "ring_size_max"), ("script_len_min", "script_len_max"),
                       ("machine_dwell_min_s", "machine_dwell_max_s")):
            if getattr(self, hi) < getattr(self, lo):
                raise ValueError(f"ClickstreamConfig.{hi} ({getattr(self, hi)}) must be >= {lo} ({getattr(self, lo)})")
        if self.shared_fraction + self.new_account_fraction > 1:
            raise ValueError("ClickstreamConfig.shared_fraction + new_account_fraction must be <= 1")
        if self.copy_fraction > 0 and self.n_rings > 0 and self.n_benign_scripted == 0:
            raise ValueError("ClickstreamConfig.copy_fraction > 0 needs n_benign_scripted >= 1 (a path to copy)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Clickstream:
    """A generated data set; N sessions in random order, L = ``config.max_len``.

    Attributes:
        types: int64 [N, L] page ids, right-padded with 0; the last real event is checkout (1).
        dt: float32 [N, L] seconds since the previous click (0 at the first event and at padding).
        lengths: int64 [N] real events per row.
        expert: float64 [N, F] expert features, columns named by ``feature_names`` (raw units).
        ring: int64 [N] fraud ring id (``0..n_rings-1``), -1 for benign sessions.
        group: int64 [N] benign scripted group id, -1 otherwise. shared: bool [N] household/office.
        fraud: bool [N] the true fraud flag (ring members).
        txn_day: float64 [N] transaction day in ``[0, window_days)``.
        label_day: float64 [N] day the chargeback arrives, ``inf`` when it never does.
        ring_type: list[str] per ring. ring_human: bool [R]. ring_copies: int64 [R] copied benign group or -1.
        config: the generating config.
    """

    types: np.ndarray
    dt: np.ndarray
    lengths: np.ndarray
    expert: np.ndarray
    feature_names: tuple[str, ...]
    ring: np.ndarray
    group: np.ndarray
    shared: np.ndarray
    fraud: np.ndarray
    txn_day: np.ndarray
    label_day: np.ndarray
    ring_type: list[str]
    ring_human: np.ndarray
    ring_copies: np.ndarray
    config: ClickstreamConfig

    def observed_labels(self, as_of: float | None = None) -> np.ndarray:
        """bool [N]: chargebacks known by day ``as_of`` (default: the window's end)."""
        as_of = self.config.window_days if as_of is None else as_of
        if not is_real(as_of):
            raise ValueError(f"observed_labels: as_of must be a finite number, got {as_of!r}")
        return self.label_day <= as_of

    def planted_features(self, ring: int) -> tuple[str, ...]:
        """The expert features ring ``ring`` was planted on."""
        return PLANTED[self.ring_type[ring]]


def _chain(rng: np.random.Generator, c: ClickstreamConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative start distribution [P] and transition rows [P, P] over browsing pages 2..n (index 0 = page 2)."""
    p = c.n_page_types - 1
    start = rng.dirichlet(np.full(p, c.markov_concentration))
    trans = rng.dirichlet(np.full(p, c.markov_concentration), size=p)
    return np.cumsum(start), np.cumsum(trans, axis=1)


def _walk(rng, cum_start, cum_trans, n_steps: np.ndarray) -> np.ndarray:
    """Markov walks: [n, max(n_steps)] page ids (2..), zero beyond each walk's length."""
    n, width = len(n_steps), int(n_steps.max(initial=0))
    out = np.zeros((n, width), dtype=np.int64)
    if width == 0:
        return out
    last = cum_start.shape[0] - 1
    state = np.minimum((cum_start[None] < rng.random((n, 1))).sum(1), last)
    for t in range(width):
        out[:, t] = state + 2
        state = np.minimum((cum_trans[state] < rng.random((n, 1))).sum(1), last)
    out[np.arange(width)[None] >= n_steps[:, None]] = 0
    return out


def _edit(rng, scripts: np.ndarray, lens: np.ndarray, p_edit: float, n_pages: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply per-click deletions / substitutions / insertions to rows of ``scripts`` [n, S] (real length
    ``lens``); returns the edited rows [n, S'] (0-padded) and their lengths."""
    n, s = scripts.shape
    valid = np.arange(s)[None] < lens[:, None]
    op = rng.random((n, s))  # < p/3 delete, < 2p/3 substitute, < p insert a random page after
    tok = np.where((op >= p_edit / 3) & (op < 2 * p_edit / 3), rng.integers(2, n_pages + 1, (n, s)), scripts)
    count = np.where(valid, 1 - (op < p_edit / 3) + ((op >= 2 * p_edit / 3) & (op < p_edit)), 0)
    flat = np.repeat(tok.ravel(), count.ravel())
    second = ragged_arange(count.ravel()) == 1
    flat[second] = rng.integers(2, n_pages + 1, int(second.sum()))
    new_lens = count.sum(1)
    out = np.zeros((n, max(1, int(new_lens.max(initial=0)))), dtype=np.int64)
    out[np.arange(out.shape[1])[None] < new_lens[:, None]] = flat
    return out, new_lens


def _expert(rng, n: int, kind: str, level: np.ndarray | None = None) -> np.ndarray:
    """Expert features [n, F] of one population; ``level`` [8] are a ring's own levels (per-ring variation)."""
    f = np.empty((n, len(FEATURES)))
    age = np.exp(rng.normal(np.log(400), 1.0, n))
    f[:, 0] = age
    f[:, 1] = np.exp(rng.normal(np.log(60), 0.9, n))
    f[:, 2] = 1 + rng.poisson(0.2, n)
    f[:, 3] = 1 + rng.poisson(0.1, n)
    f[:, 4] = 1 + rng.poisson(0.5, n)
    f[:, 5] = 1 + rng.poisson(0.1, n)
    f[:, 6] = rng.poisson(0.1, n)
    f[:, 7] = np.minimum(age, np.exp(rng.normal(np.log(200), 1.0, n)))
    if kind == "shared":  # households / offices
        f[:, 3] = 2 + rng.poisson(2.0, n)
        f[:, 4] = 2 + rng.poisson(rng.choice([2.0, 15.0], n))
        f[:, 5] = 1 + rng.poisson(2.0, n)
    elif kind == "new":
        f[:, 0] = rng.uniform(0, 30, n)
        f[:, 7] = rng.uniform(0, 1, n) * f[:, 0]
    elif kind in RING_TYPES:
        lv = level
        f[:, 1] = np.exp(rng.normal(np.log(lv[1]), 0.5, n))
        f[:, 2] = 1 + rng.poisson(lv[2], n)
        f[:, 3] = 1 + rng.poisson(lv[3], n)
        f[:, 4] = 1 + rng.poisson(lv[4], n)
        f[:, 5] = 1 + rng.poisson(lv[5], n)
        f[:, 6] = rng.poisson(lv[6], n)
        if kind == "farm":
            f[:, 0] = rng.uniform(0, lv[0], n)
            f[:, 7] = rng.uniform(0, 1, n) * f[:, 0]
        elif kind == "takeover":  # aged accounts, fresh card
            f[:, 7] = rng.uniform(0, lv[7], n)
        else:  # reship
            f[:, 0] = rng.uniform(0.3 * lv[0], lv[0], n)
            f[:, 7] = rng.uniform(0, 1, n) * f[:, 0]
    return f


# Ranges of the per-ring feature levels by type: [age bound, amount median, orders, device, ip, address,
# declined, payment-age bound]; orders .. declined are Poisson means of the excess over the baseline.
_LEVELS = {
    "farm": ((1, 150, 1, 6, 4, 5, 0.8, 0), (7, 500, 4, 20, 15, 20, 2.5, 0)),
    "takeover": ((0, 200, 0.5, 3, 0.3, 2, 0.5, 1), (0, 600, 2, 8, 2, 8, 2, 5)),
    "reship": ((20, 80, 0.2, 0, 8, 8, 0.1, 0), (90, 250, 1, 0.3, 30, 30, 0.6, 0)),
}


def _ring_levels(rng, kind: str, spread: float) -> np.ndarray:
    """A ring's feature levels: the type's mid-range moved ``spread`` of the way to a uniform draw."""
    lo, hi = (np.array(v, dtype=np.float64) for v in _LEVELS[kind])
    mid = (lo + hi) / 2
    return mid + spread * (rng.uniform(lo, hi) - mid)


def generate_clickstream(config: ClickstreamConfig) -> Clickstream:
    """Generate the planted click streams of the module docstring."""
    c = config
    rng = np.random.default_rng(c.seed)
    cum_start, cum_trans = _chain(rng, c)
    n_pages = c.n_page_types

    # Scripts: benign automation groups first, then rings (some replay a benign group's script and dwell).
    n_scripts = c.n_benign_scripted + c.n_rings
    sizes = rng.integers(c.ring_size_min, c.ring_size_max + 1, n_scripts)
    script_len = rng.integers(c.script_len_min, c.script_len_max + 1, n_scripts)
    scripts = _walk(rng, cum_start, cum_trans, script_len)
    machine = rng.uniform(c.machine_dwell_min_s, c.machine_dwell_max_s, n_scripts)
    ring_copies = np.full(c.n_rings, -1, dtype=np.int64)
    n_copy = int(round(c.copy_fraction * c.n_rings)) if c.n_benign_scripted else 0
    copy_rings = rng.choice(c.n_rings, n_copy, replace=False)
    ring_copies[copy_rings] = rng.integers(0, c.n_benign_scripted, n_copy)
    for r in copy_rings:
        src, dst = ring_copies[r], c.n_benign_scripted + r
        scripts[dst], script_len[dst], machine[dst] = scripts[src], script_len[src], machine[src]
    ring_human = np.zeros(c.n_rings, dtype=bool)
    ring_human[rng.choice(c.n_rings, int(round(c.human_ring_fraction * c.n_rings)), replace=False)] = True
    ring_type = [RING_TYPES[i] for i in (rng.permutation(c.n_rings) % len(RING_TYPES))]

    # Sessions of the scripted populations.
    owner = np.repeat(np.arange(n_scripts), sizes)  # script index per scripted session
    clicks, n_clicks_s = _edit(rng, scripts[owner], script_len[owner], c.edit_prob, n_pages)
    is_ring_s = owner >= c.n_benign_scripted
    human_s = np.zeros(len(owner), dtype=bool)
    human_s[is_ring_s] = ring_human[owner[is_ring_s] - c.n_benign_scripted]

    # Normal sessions.
    n_clicks_n = np.minimum(rng.geometric(1.0 / c.mean_len, c.n_normal), 4 * c.max_len)
    walks = _walk(rng, cum_start, cum_trans, n_clicks_n)

    # Assemble: clicks then checkout, keep the last max_len events.
    n_all = c.n_normal + len(owner)
    n_clicks = np.r_[n_clicks_n, n_clicks_s]
    width = max(walks.shape[1], clicks.shape[1]) + 1
    seq = np.zeros((n_all, width), dtype=np.int64)
    seq[:c.n_normal, :walks.shape[1]] = walks
    seq[c.n_normal:, :clicks.shape[1]] = clicks
    seq[np.arange(n_all), n_clicks] = CHECKOUT
    full_len = n_clicks + 1
    valid = np.arange(width)[None] < full_len[:, None]

    # Dwell: human lognormal x per-user speed; machine: the script's constant with small jitter.
    speed = np.exp(rng.normal(0.0, 0.3, (n_all, 1)))
    gaps = np.exp(rng.normal(np.log(c.dwell_median_s), c.dwell_sigma, (n_all, width))) * speed
    mach = np.r_[np.zeros(c.n_normal, dtype=bool), ~human_s]
    base = machine[owner[~human_s]][:, None]
    jitter = 1.0 + c.ring_dwell_cv * rng.standard_normal((len(base), width))
    gaps[mach] = base * np.clip(jitter, 0.2, None)
    gaps[:, 0] = 0.0
    gaps[~valid] = 0.0

    # Keep the last max_len events, right-padded.
    L = c.max_len
    lengths = np.minimum(full_len, L)
    src_col = (full_len - lengths)[:, None] + np.arange(L)[None]
    keep = np.arange(L)[None] < lengths[:, None]
    src_col = np.where(keep, src_col, 0)
    types = np.where(keep, np.take_along_axis(seq, src_col, 1), 0)
    dt = np.where(keep, np.take_along_axis(gaps, src_col, 1), 0.0).astype(np.float32)
    dt[:, 0] = 0.0

    # Expert features.
    expert = np.empty((n_all, len(FEATURES)))
    kind_u = rng.random(c.n_normal)
    shared = np.r_[kind_u < c.shared_fraction, np.zeros(len(owner), dtype=bool)]
    new = np.r_[(kind_u >= c.shared_fraction) & (kind_u < c.shared_fraction + c.new_account_fraction),
                np.zeros(len(owner), dtype=bool)]
    plain = ~shared & ~new
    plain[c.n_normal:] = ~is_ring_s
    for kind, mask in (("normal", plain), ("shared", shared), ("new", new)):
        expert[mask] = _expert(rng, int(mask.sum()), kind)
    ring = np.full(n_all, -1, dtype=np.int64)
    ring[c.n_normal:][is_ring_s] = owner[is_ring_s] - c.n_benign_scripted
    for r in range(c.n_rings):
        m = ring == r
        expert[m] = _expert(rng, int(m.sum()), ring_type[r], _ring_levels(rng, ring_type[r], c.ring_level_spread))
    group = np.full(n_all, -1, dtype=np.int64)
    group[c.n_normal:][~is_ring_s] = owner[~is_ring_s]

    # Lagged chargebacks.
    fraud = ring >= 0
    txn_day = rng.uniform(0, c.window_days, n_all)
    charged = rng.random(n_all) < np.where(fraud, c.chargeback_rate, c.benign_chargeback_rate)
    label_day = np.where(charged, txn_day + rng.exponential(c.label_delay_days, n_all), np.inf)

    perm = rng.permutation(n_all)
    return Clickstream(types=types[perm], dt=dt[perm], lengths=lengths[perm].astype(np.int64),
                       expert=expert[perm], feature_names=FEATURES, ring=ring[perm], group=group[perm],
                       shared=shared[perm], fraud=fraud[perm], txn_day=txn_day[perm], label_day=label_day[perm],
                       ring_type=ring_type, ring_human=ring_human, ring_copies=ring_copies, config=c)
