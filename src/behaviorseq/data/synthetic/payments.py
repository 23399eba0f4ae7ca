"""Planted long-term payment sequences for default prediction (LBSF brief section 2, "Offline tests").

Merchants ``1..n_merchants`` belong to latent categories ``0..n_categories-1`` (every category non-empty).
A merchant has a name (its category's word plus a random syllable pair, so character n-grams of the
name reveal the category) and a log-amount level; a payment's description is "<merchant name>
<item word>", one of ``n_descriptions_per_merchant`` variants. Users have a latent archetype (a
Dirichlet preference over categories); each picks ``n_favourites`` favourite merchants from categories
drawn by that preference; favourite 0, the *pillar*, takes ``pillar_share`` of the favourite payments
and the others split the rest by Dirichlet shares.

Payments span the observation window ``[0, horizon_days)`` in days; the label date is ``horizon_days``
and nothing at or after it is generated (no leakage). Background payments arrive as a Poisson process
(``rate_per_day`` times a per-user log-normal activity), go to a favourite with probability
``1 - tail_prob`` (else to a uniform random merchant: the long tail), at a uniform time.
Three default mechanisms are planted (``reason`` 1..3, mutually exclusive, 0 = none):

1. *Long-range shift*: the user's spending at the pillar category (only the pillar among the favourites
   is of that category) collapses at ``collapse_before`` days before the label date, drawn in
   ``[collapse_min, collapse_max]`` (120-180 by default); from then on the pillar's payments go to a
   *replacement* merchant of another category drawn from the user's archetype, as every user's
   favourites are (random long-tail payments may still hit that category). Recent behaviour looks
   normal: a window shorter than ``collapse_before`` shows a dominant merchant like everybody's; only a
   long window shows the switch.
2. *Recurring stop*: users with a recurring merchant (probability ``recurring_prob``; a rent/loan-like
   payment every ``recurring_period`` +- ``recurring_jitter`` days at a fixed amount) stop paying it
   ``stop_before`` days before the label date, drawn in ``[stop_min, stop_max]``.
3. *Escalation*: users with a credit merchant (probability ``credit_prob``; ``credit_count`` payments
   at uniform times) pay it amounts that rise in time; everybody else's credit amounts are in random
   order with the same marginal, so within the merchant only the chronology carries the signal. Having
   a recurring or credit merchant at all does predict default (reasons 2 and 3 need one): their presence in
   the window alone gives AUC 0.54-0.61 (``benchmarks/planted_shortcuts.py``).

A user draws ``u ~ U(0,1)``: reason 1 if ``u < p_collapse``; reason 2 if the next ``p_stop`` and the
user has a recurring merchant; reason 3 if the next ``p_escalate`` and the user has a credit merchant.
The label is ``reason > 0``, flipped with probability ``label_noise``. Users take the roles
train / valid / test at random. Everything is vectorised over payments and users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from behaviorseq.data.store import ragged_arange
from behaviorseq.data.synthetic._checks import is_int, is_real

NAME = "synthetic-payments"
TRAIN, VALID, TEST = 0, 1, 2
CATEGORY_WORDS = ("grocery", "dining", "fuel", "pharmacy", "apparel", "travel", "telecom", "utility",
                  "gaming", "education", "cinema", "fitness", "books", "electronics", "pets", "beauty")
RECURRING_WORD, CREDIT_WORD = "rent housing", "credit cash advance"
_SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "vo", "ri", "pe", "zu", "ba", "do", "fi", "go", "hu", "ja")
_ITEMS = ("order", "purchase", "refill", "service", "bill", "ticket", "topup", "voucher")


@dataclass(frozen=True)
class PaymentsConfig:
    """Parameters of :func:`generate_payments`; every value is checked on construction (``ValueError``).

    Attributes:
        n_users, n_merchants, n_categories (<= 16, one word each), n_archetypes: sizes.
        n_favourites: favourite merchants per user (favourite 0 is the pillar).
        horizon_days: observation window length; the label date is ``horizon_days``.
        rate_per_day: mean background payments per user per day.
        activity_sigma: sigma of the per-user log-normal activity multiplier.
        tail_prob: probability that a background payment goes to a random (long-tail) merchant.
        pillar_share: share of the pillar (favourite 0) among the favourite payments, in (0, 1).
        n_descriptions_per_merchant: description variants per merchant.
        amount_sigma: log-amount noise around the merchant's level.
        p_collapse, p_stop, p_escalate: probabilities of the three default reasons (see module doc).
        collapse_min, collapse_max: range of ``collapse_before`` in days before the label date.
        recurring_prob, recurring_period, recurring_jitter: the recurring merchant.
        stop_min, stop_max: range of ``stop_before`` in days before the label date.
        credit_prob, credit_count: the credit merchant and its number of payments.
        label_noise: probability of flipping a label.
        valid_fraction, test_fraction: probability of a user being valid / test.
        seed: seed of ``numpy.random.default_rng``.
    """

    n_users: int = 4000
    n_merchants: int = 300
    n_categories: int = 12
    n_archetypes: int = 6
    n_favourites: int = 6
    horizon_days: int = 180
    rate_per_day: float = 1.0
    activity_sigma: float = 0.3
    tail_prob: float = 0.15
    pillar_share: float = 0.35
    n_descriptions_per_merchant: int = 3
    amount_sigma: float = 0.5
    p_collapse: float = 0.12
    p_stop: float = 0.2
    p_escalate: float = 0.2
    collapse_min: float = 120.0
    collapse_max: float = 180.0
    recurring_prob: float = 0.5
    recurring_period: float = 30.0
    recurring_jitter: float = 2.0
    stop_min: float = 30.0
    stop_max: float = 100.0
    credit_prob: float = 0.5
    credit_count: int = 8
    label_noise: float = 0.02
    valid_fraction: float = 0.15
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        ints = ("n_users", "n_merchants", "n_categories", "n_archetypes", "n_favourites", "horizon_days",
                "n_descriptions_per_merchant", "credit_count", "seed")
        for name in ints:
            v = getattr(self, name)
            if not is_int(v):
                raise ValueError(f"PaymentsConfig.{name} must be an int, got {v!r}")
            lo = 0 if name == "seed" else 1
            if v < lo:
                raise ValueError(f"PaymentsConfig.{name} must be >= {lo}, got {v}")
        reals = ("rate_per_day", "activity_sigma", "tail_prob", "pillar_share", "amount_sigma", "p_collapse",
                 "p_stop",
                 "p_escalate", "collapse_min", "collapse_max", "recurring_prob",
                 "recurring_period", "recurring_jitter", "stop_min", "stop_max", "credit_prob", "label_noise",
                 "valid_fraction", "test_fraction")
        for name in reals:
            v = getattr(self, name)
            if not is_real(v):
                raise ValueError(f"PaymentsConfig.{name} must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"PaymentsConfig.{name} must be >= 0, got {v}")
        if not 0 < self.pillar_share < 1:
            raise ValueError(f"PaymentsConfig.pillar_share must be in (0, 1), got {self.pillar_share}")
        for name in ("tail_prob", "p_collapse", "p_stop", "p_escalate", "recurring_prob",
                     "credit_prob", "label_noise"):
            if getattr(self, name) > 1:
                raise ValueError(f"PaymentsConfig.{name} is a probability, got {getattr(self, name)}")
        if self.p_collapse + self.p_stop + self.p_escalate > 1:
            raise ValueError("PaymentsConfig: p_collapse + p_stop + p_escalate must be <= 1")
        if self.n_categories < 2:
            raise ValueError("PaymentsConfig.n_categories must be >= 2 (the collapse switches category), "
                             f"got {self.n_categories}")
        if self.n_categories > len(CATEGORY_WORDS):
            raise ValueError(f"PaymentsConfig.n_categories must be <= {len(CATEGORY_WORDS)}, "
                             f"got {self.n_categories}")
        if self.n_merchants < self.n_categories + 2:
            raise ValueError(f"PaymentsConfig.n_merchants ({self.n_merchants}) must be >= n_categories + 2 "
                             f"({self.n_categories + 2}): every category, the recurring and the credit merchants")
        if self.n_favourites > self.n_merchants - 2:
            raise ValueError(f"PaymentsConfig.n_favourites ({self.n_favourites}) must be <= n_merchants - 2")
        for lo, hi in (("collapse_min", "collapse_max"), ("stop_min", "stop_max")):
            if getattr(self, hi) < getattr(self, lo):
                raise ValueError(f"PaymentsConfig.{hi} must be >= {lo}")
            if getattr(self, hi) > self.horizon_days:
                raise ValueError(f"PaymentsConfig.{hi} ({getattr(self, hi)}) must be <= horizon_days")
        if self.recurring_period <= 0 or self.recurring_jitter >= self.recurring_period / 2:
            raise ValueError("PaymentsConfig.recurring_period must be > 0 and recurring_jitter < period / 2")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("PaymentsConfig.valid_fraction + test_fraction must be below 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class PaymentData:
    """A flat payment table sorted by (user, time), with per-user labels.

    Attributes:
        user, merchant, description: int64 [P]; merchant ids ``1..n_merchants``, description ids index
            ``descriptions`` (0 is the empty padding string).
        amount: float64 [P], positive. time: float64 [P], days since the window start, ``< label_day``.
        label: int64 [n_users]; role: int64 [n_users] (TRAIN / VALID / TEST).
        merchant_names: list[str] [n_merchants + 1] (entry 0 empty); descriptions: list[str].
        label_day: the label (observation) date in the same day units; or one per user [n_users] (float64).
        report: how the data were read (``data.payment_tables``: rows dropped, label date origin).
        user_names: the raw id of each user 0..n-1 (tables read from files), or None (generated users).
    """

    user: np.ndarray
    merchant: np.ndarray
    description: np.ndarray
    amount: np.ndarray
    time: np.ndarray
    label: np.ndarray
    role: np.ndarray
    merchant_names: list
    descriptions: list
    label_day: float | np.ndarray
    report: dict = field(default_factory=dict)
    user_names: list | None = None

    @property
    def n_users(self) -> int:
        return int(self.label.shape[0])


@dataclass(frozen=True, eq=False)
class PaymentsTruth:
    """Why each user defaults. Arrays are [n_users]; NaN / 0 where not applicable.

    Attributes:
        reason: 0 none, 1 long-range collapse, 2 recurring stop, 3 escalation (before label noise).
        archetype, pillar_merchant, pillar_category: the user's archetype, favourite 0 and its category.
        collapse_before: days before the label date when pillar spending stops (reason 1).
        replacement_merchant: the merchant taking the pillar's payments after the collapse (all users
            draw one; only reason 1 uses it).
        recurring_merchant, stop_before: the recurring merchant (0 none) and its stop (reason 2).
        credit_merchant: the credit merchant (0 none). merchant_category: int64 [n_merchants + 1] (-1 at 0).
    """

    reason: np.ndarray
    archetype: np.ndarray
    pillar_merchant: np.ndarray
    pillar_category: np.ndarray
    collapse_before: np.ndarray
    replacement_merchant: np.ndarray
    recurring_merchant: np.ndarray
    stop_before: np.ndarray
    credit_merchant: np.ndarray
    merchant_category: np.ndarray
    config: PaymentsConfig


def _choose_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One categorical draw per entry of ``rows`` from ``probs[rows]`` (rows sum to 1): inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(rows.shape[0]) * cdf[rows, -1]
    return np.minimum((cdf[rows] < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def generate_payments(config: PaymentsConfig | None = None) -> tuple[PaymentData, PaymentsTruth]:
    """Draw a payments data set and its ground truth (see the module docstring)."""
    c = config or PaymentsConfig()
    rng = np.random.default_rng(c.seed)
    U, K, H = c.n_users, c.n_categories, float(c.horizon_days)

    # Merchants: ids 1..n_merchants. The last two category slots are the recurring and the credit merchants'
    # own categories (K and K+1); ordinary merchants cover categories 0..K-1, each non-empty.
    n_ord = c.n_merchants - 2
    m_cat = np.concatenate([np.arange(K), rng.integers(0, K, n_ord - K)])
    m_cat = np.concatenate([[-1], rng.permutation(m_cat), [K, K + 1]]).astype(np.int64)
    rec_id, cred_id = c.n_merchants - 1, c.n_merchants
    m_level = np.concatenate([[0.0], rng.normal(3.0, 0.8, c.n_merchants)])
    m_level[rec_id], m_level[cred_id] = 6.5, 5.0
    words = np.array(CATEGORY_WORDS[:K] + (RECURRING_WORD, CREDIT_WORD), dtype=object)
    syl = np.array(_SYLLABLES, dtype=object)
    s1, s2 = rng.integers(0, len(syl), (2, c.n_merchants + 1))
    names = words[np.maximum(m_cat, 0)] + " " + syl[s1] + syl[s2] + np.arange(c.n_merchants + 1).astype(str)
    names[0] = ""
    V = c.n_descriptions_per_merchant
    items = np.array(_ITEMS, dtype=object)[rng.integers(0, len(_ITEMS), (c.n_merchants + 1, V))]
    descriptions = [""] + list((names[1:, None] + " " + items[1:]).ravel())  # id of (m, v): 1 + (m-1)*V + v

    # Users: archetype -> category preference -> favourites (distinct ordinary merchants) with shares.
    arch_pref = rng.dirichlet(np.full(K, 0.5), c.n_archetypes)
    archetype = rng.integers(0, c.n_archetypes, U)
    by_cat = np.argsort(m_cat[1:n_ord + 1], kind="stable") + 1  # ordinary merchant ids grouped by category
    cat_count = np.bincount(m_cat[1:n_ord + 1], minlength=K)
    cat_start = np.cumsum(cat_count) - cat_count
    F = c.n_favourites
    fav_cat = _choose_rows(rng, arch_pref, np.repeat(archetype, F)).reshape(U, F)
    clash = fav_cat[:, 1:] == fav_cat[:, :1]  # only the pillar lives in the pillar category
    moved = (fav_cat[:, 1:] + 1 + rng.integers(0, K - 1, clash.shape)) % K
    fav_cat[:, 1:] = np.where(clash, moved, fav_cat[:, 1:])
    fav = by_cat[cat_start[fav_cat] + (rng.random((U, F)) * cat_count[fav_cat]).astype(np.int64)]
    dup = (fav[:, :, None] == fav[:, None, :]) & np.tri(F, k=-1, dtype=bool)[None].transpose(0, 2, 1)
    fav = np.where(dup.any(axis=1), 0, fav)  # repeated picks drop out (merchant 0 = no favourite)
    share = np.sort(rng.dirichlet(np.full(F, 1.0), U), axis=1)[:, ::-1] * (fav > 0)
    if F > 1:  # the pillar (fav[:, 0], never a repeat) takes pillar_share, the others share the rest
        share[:, 1:] *= (1 - c.pillar_share) / np.maximum(share[:, 1:].sum(axis=1, keepdims=True), 1e-12)
    share[:, 0] = c.pillar_share if F > 1 else 1.0
    pillar_cat = m_cat[fav[:, 0]]

    u = rng.random(U)
    has_rec, has_cred = rng.random(U) < c.recurring_prob, rng.random(U) < c.credit_prob
    reason = np.zeros(U, dtype=np.int64)
    reason[u < c.p_collapse] = 1
    reason[(u >= c.p_collapse) & (u < c.p_collapse + c.p_stop) & has_rec] = 2
    lo3 = c.p_collapse + c.p_stop
    reason[(u >= lo3) & (u < lo3 + c.p_escalate) & has_cred] = 3
    rep_cat = _choose_rows(rng, arch_pref, archetype)
    rep_cat = np.where(rep_cat == pillar_cat, (rep_cat + 1 + rng.integers(0, K - 1, U)) % K, rep_cat)
    rep = by_cat[cat_start[rep_cat] + (rng.random(U) * cat_count[rep_cat]).astype(np.int64)]
    collapse_before = np.where(reason == 1, rng.uniform(c.collapse_min, c.collapse_max, U), np.nan)
    stop_before = np.where(reason == 2, rng.uniform(c.stop_min, c.stop_max, U), np.nan)

    # Background payments.
    activity = np.exp(rng.normal(-c.activity_sigma ** 2 / 2, c.activity_sigma, U))
    n_bg = rng.poisson(c.rate_per_day * H * activity)
    bu = np.repeat(np.arange(U), n_bg)
    bt = rng.random(bu.shape[0]) * H
    slot = _choose_rows(rng, share, bu)
    bm = fav[bu, slot]
    tail = rng.random(bu.shape[0]) < c.tail_prob
    bm[tail] = rng.integers(1, n_ord + 1, int(tail.sum()))
    # After the collapse, the pillar's payments go to the replacement (no other favourite shares its category).
    after = bt >= H - np.nan_to_num(collapse_before[bu], nan=-1.0)
    bm = np.where(after & (bm == fav[bu, 0]), rep[bu], bm)
    keep = bm > 0
    bu, bt, bm = bu[keep], bt[keep], bm[keep]

    # Recurring merchant: monthly, fixed amount, stopped for reason 2.
    n_per = int(np.ceil(H / c.recurring_period)) + 1
    ru = np.repeat(np.flatnonzero(has_rec), n_per)
    phase = rng.random(U) * c.recurring_period
    rt = phase[ru] + ragged_arange(np.full(int(has_rec.sum()), n_per)) * c.recurring_period
    rt = rt + rng.uniform(-c.recurring_jitter, c.recurring_jitter, ru.shape[0])
    rkeep = (rt >= 0) & (rt < H) & ~(rt >= H - np.nan_to_num(stop_before[ru], nan=-1.0))
    ru, rt = ru[rkeep], rt[rkeep]
    rec_amount = np.exp(m_level[rec_id] + rng.normal(0, c.amount_sigma, U))

    # Credit merchant: uniform times; amounts sorted in time for reason 3.
    cu = np.repeat(np.flatnonzero(has_cred), c.credit_count)
    ct = rng.random(cu.shape[0]) * H
    ca = np.exp(m_level[cred_id] + rng.normal(0, c.amount_sigma, cu.shape[0]))
    esc = reason[cu] == 3
    t_order = np.flatnonzero(esc)[np.lexsort((ct[esc], cu[esc]))]  # escalating rows by (user, time)
    a_order = np.flatnonzero(esc)[np.lexsort((ca[esc], cu[esc]))]  # the same rows by (user, amount)
    ca[t_order] = ca[a_order].copy()

    user = np.concatenate([bu, ru, cu])
    time = np.concatenate([bt, rt, ct])
    merchant = np.concatenate([bm, np.full(ru.shape[0], rec_id), np.full(cu.shape[0], cred_id)])
    amount = np.concatenate([np.exp(m_level[bm] + rng.normal(0, c.amount_sigma, bm.shape[0])), rec_amount[ru], ca])
    description = 1 + (merchant - 1) * V + rng.integers(0, V, merchant.shape[0])
    order = np.lexsort((time, user))
    label = ((reason > 0) ^ (rng.random(U) < c.label_noise)).astype(np.int64)
    r = rng.random(U)
    role = np.where(r < c.valid_fraction, VALID, np.where(r < c.valid_fraction + c.test_fraction, TEST, TRAIN))
    data = PaymentData(
        user=user[order].astype(np.int64), merchant=merchant[order].astype(np.int64),
        description=description[order].astype(np.int64), amount=np.round(amount[order], 2) + 0.01,
        time=time[order], label=label, role=role.astype(np.int64), merchant_names=list(names),
        descriptions=descriptions, label_day=H,
    )
    truth = PaymentsTruth(
        reason=reason, archetype=archetype, pillar_merchant=fav[:, 0].copy(), pillar_category=pillar_cat,
        collapse_before=collapse_before,
        replacement_merchant=rep, recurring_merchant=np.where(has_rec, rec_id, 0), stop_before=stop_before,
        credit_merchant=np.where(has_cred, cred_id, 0), merchant_category=m_cat, config=c,
    )
    return data, truth
