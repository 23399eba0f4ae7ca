"""Splits as index views into a SequenceStore: no sequence is copied.

A ``View`` is a set of samples; sample j reads the inputs ``[input_start[j], input_end[j])`` and
predicts the targets ``[target_start[j], target_end[j])``, both ranges of flat event indices of the
store (so of one user, in time order). Training views are "shifted": the targets are the inputs moved
one step ahead (next-item training over the whole prefix). Evaluation views hold one target
(leave-one-out, temporal) or a set of targets (user holdout).

``Split.roles`` assigns every event one role (0 train, 1 valid, 2 test); the property tests check that
targets of a view carry its role and that no training input ever holds a validation or test event.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from behaviorseq.config import ConfigError
from behaviorseq.data.store import SequenceStore, ragged_arange

TRAIN, VALID, TEST = 0, 1, 2
ROLE_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


@dataclass
class View:
    role: str
    user: np.ndarray
    input_start: np.ndarray
    input_end: np.ndarray
    target_start: np.ndarray
    target_end: np.ndarray
    shifted: bool = False  # targets = inputs one step ahead (training over every prefix)

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, idx: np.ndarray) -> View:
        return View(self.role, self.user[idx], self.input_start[idx], self.input_end[idx],
                    self.target_start[idx], self.target_end[idx], self.shifted)

    def windows(self, max_len: int) -> View:
        """A shifted view cut into consecutive chunks of at most ``max_len`` inputs, from the latest
        backwards, so that every training target is predicted once per epoch even when a sequence is
        longer than the model's window (SASRec's own code keeps only the latest ``max_len``)."""
        if not self.shifted:
            raise ValueError("windows() applies to shifted (training) views")
        n = self.input_end - self.input_start
        k = -(-n // max_len)  # chunks per sample
        j = ragged_arange(k)
        end = np.repeat(self.input_end, k) - j * max_len
        start = np.maximum(np.repeat(self.input_start, k), end - max_len)
        return View(self.role, np.repeat(self.user, k), start, end, start + 1, end + 1, shifted=True)

    def prefixes(self, min_input: int = 1) -> View:
        """One single-target sample per target event of a shifted view: the event is the target and
        everything before it (from ``input_start``) the input, so every training event is predicted
        once per epoch with its full history (RecBole's and SRA-CL's training samples). Targets with
        fewer than ``min_input`` input events are dropped. Rows are ordered by user, then time, so a
        row index names the same prefix in every epoch."""
        if not self.shifted:
            raise ValueError("prefixes() applies to shifted (training) views")
        n = self.target_end - self.target_start
        j = np.repeat(self.target_start, n) + ragged_arange(n)  # target event of each sample
        hs = np.repeat(self.input_start, n)
        keep = j - hs >= max(1, min_input)
        j, hs, u = j[keep], hs[keep], np.repeat(self.user, n)[keep]
        return View(self.role, u, hs, j, j, j + 1)

    def random_targets(self, rng: np.random.Generator, min_input: int = 4) -> View:
        """One single-target sample per user of a shifted view, the target drawn uniformly among the
        events with at least ``min_input`` predecessors (fewer when the sequence is too short: then
        among all events with at least one), as ComiRec's training does for each sampled user."""
        if not self.shifted:
            raise ValueError("random_targets() applies to shifted (training) views")
        n_events = self.target_end - self.input_start  # events of the user's training sequence
        lo = np.where(n_events > min_input, min_input, 1)  # first admissible target offset
        off = lo + np.floor(rng.random(len(self)) * (n_events - lo)).astype(np.int64)
        j = self.input_start + off
        return View(self.role, self.user, self.input_start.copy(), j, j, j + 1)

    @property
    def num_targets(self) -> int:
        return int((self.target_end - self.target_start).sum())


@dataclass
class Split:
    name: str
    params: dict
    train: View
    valid: View
    test: View
    roles: np.ndarray  # [num_events] int8
    extra: dict = field(default_factory=dict)

    def view(self, role: str) -> View:
        return {"train": self.train, "valid": self.valid, "test": self.test}[role]

    def describe(self) -> dict:
        """The protocol record every result carries."""
        return {
            "split": self.name, **self.params,
            "samples": {v.role: len(v) for v in (self.train, self.valid, self.test)},
            "targets": {v.role: v.num_targets for v in (self.train, self.valid, self.test)},
        }


def _shifted(user: np.ndarray, start: np.ndarray, end: np.ndarray, role: str = "train") -> View:
    """Sequence-training samples over ``[start, end)`` per user; users with < 2 events give none."""
    keep = end - start >= 2
    u, s, e = user[keep], start[keep], end[keep]
    return View(role, u, s, e - 1, s + 1, e, shifted=True)


def _per_event(user: np.ndarray, hist_start: np.ndarray, first: np.ndarray, last: np.ndarray, role: str) -> View:
    """One sample per event j in ``[first, last)`` of each user, with the history ``[hist_start, j)``.
    Events with an empty history (a user's first event) are not predictable and give no sample."""
    n = last - first
    j = np.repeat(first, n) + ragged_arange(n)
    hs = np.repeat(hist_start, n)
    keep = j > hs
    j, hs, u = j[keep], hs[keep], np.repeat(user, n)[keep]
    return View(role, u, hs, j, j, j + 1)


def leave_one_out(store: SequenceStore, min_length: int = 3) -> Split:
    """Last event = test, second-to-last = validation, the rest = training (SASRec / S3-Rec protocol).

    Users with fewer than ``min_length`` (3) events keep all events in training, as in SASRec."""
    if min_length < 3:  # it was raised to 3 silently while the protocol record said otherwise
        raise ValueError(f"leave_one_out: min_length must be >= 3 (a training, a validation and a test event), "
                         f"got {min_length}")
    users = np.arange(1, store.num_users + 1)
    s, e = store.offsets[1:-1].astype(np.int64), store.offsets[2:].astype(np.int64)
    n = e - s
    full = n >= min_length
    roles = np.zeros(store.num_events, dtype=np.int8)
    roles[e[full] - 1] = TEST
    roles[e[full] - 2] = VALID
    train_end = np.where(full, e - 2, e)
    train = _shifted(users, s, train_end)
    uf, sf, ef = users[full], s[full], e[full]
    valid = View("valid", uf, sf, ef - 2, ef - 2, ef - 1)
    test = View("test", uf, sf, ef - 1, ef - 1, ef)
    return Split("leave_one_out", {"min_length": min_length}, train, valid, test, roles)


def temporal(store: SequenceStore, valid_frac: float = 0.1, test_frac: float = 0.1,
             cutoffs: tuple[float, float] | None = None, window: tuple[float, float] | None = None) -> Split:
    """Global temporal split: events before ``t_valid`` train, [t_valid, t_test) validate, after test.

    Cutoffs default to the time quantiles that leave ``valid_frac`` and ``test_frac`` of the events in
    the later roles. Every validation/test event is one sample whose history is all earlier events of
    its user (from the window start); training uses each user's training events as one sequence.
    ``window`` = (t_lo, t_hi) restricts everything to events in [t_lo, t_hi) (rolling windows)."""
    t = np.asarray(store.timestamp)
    u_all = store.event_user()
    inside = np.ones(len(t), dtype=bool) if window is None else (t >= window[0]) & (t < window[1])
    if cutoffs is None:
        tw = t[inside]
        if len(tw) == 0:
            if window is None:
                raise ValueError("temporal split: the store has no events")
            cutoffs = (window[1], window[1])  # an empty window: empty views
        else:
            cutoffs = (float(np.quantile(tw, 1 - valid_frac - test_frac, method="higher")),
                       float(np.quantile(tw, 1 - test_frac, method="higher")))
    t_valid, t_test = cutoffs
    if t_valid > t_test:
        raise ValueError(f"temporal split: validation cutoff {t_valid} is after the test cutoff {t_test}")
    roles = np.full(len(t), -1, dtype=np.int8)
    roles[inside] = np.where(t[inside] < t_valid, TRAIN, np.where(t[inside] < t_test, VALID, TEST))
    nu = store.num_users + 1

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(u_all[mask], minlength=nu)[1:]

    users = np.arange(1, nu)
    s = store.offsets[1:-1].astype(np.int64)
    before = count(~inside & (t < (window[0] if window else -np.inf)))
    w = s + before  # first event of the window
    a = w + count(roles == TRAIN)
    b = a + count(roles == VALID)
    c = b + count(roles == TEST)
    params = {"t_valid": t_valid, "t_test": t_test, "window": list(window) if window else None,
              "valid_frac": valid_frac, "test_frac": test_frac}
    return Split("temporal", params, _shifted(users, w, a), _per_event(users, w, a, b, "valid"),
                 _per_event(users, w, b, c, "test"), roles)


def user_holdout(store: SequenceStore, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 input_frac: float = 0.8, seed: int = 0) -> Split:
    """ComiRec protocol: users split 8:1:1; a held-out user's first 80% of events are the input and
    the rest the target set. Training users train on their whole sequence."""
    if abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"user_holdout fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    users = rng.permutation(np.arange(1, store.num_users + 1))
    n_tr = int(round(fractions[0] * len(users)))
    n_va = int(round(fractions[1] * len(users)))
    groups = (np.sort(users[:n_tr]), np.sort(users[n_tr:n_tr + n_va]), np.sort(users[n_tr + n_va:]))
    s, e = store.offsets[:-1].astype(np.int64), store.offsets[1:].astype(np.int64)
    n = e - s
    # Held-out users need one input and one target; shorter ones train.
    short_va, short_te = groups[1][n[groups[1]] < 2], groups[2][n[groups[2]] < 2]
    tr = np.sort(np.concatenate([groups[0], short_va, short_te]))
    va, te = groups[1][n[groups[1]] >= 2], groups[2][n[groups[2]] >= 2]
    roles = np.zeros(store.num_events, dtype=np.int8)
    eu = store.event_user()
    roles[np.isin(eu, va)] = VALID
    roles[np.isin(eu, te)] = TEST

    def held(us: np.ndarray, role: str) -> View:
        k = np.clip((n[us] * input_frac).astype(np.int64), 1, n[us] - 1)
        return View(role, us, s[us], s[us] + k, s[us] + k, e[us])

    params = {"fractions": list(fractions), "input_frac": input_frac, "seed": seed}
    return Split("user_holdout", params, _shifted(tr, s[tr], e[tr]), held(va, "valid"), held(te, "test"), roles)


def rolling_windows(store: SequenceStore, n_windows: int, valid_frac: float = 0.1, test_frac: float = 0.1,
                    edges: list[float] | None = None) -> list[Split]:
    """A stream cut into consecutive time windows (tasks), each split temporally within itself.
    ``edges`` (n_windows + 1 times) override equal-width windows over the whole time span."""
    t = np.asarray(store.timestamp)
    if edges is None:
        lo, hi = float(t.min()), float(t.max())
        edges = list(np.linspace(lo, hi, n_windows + 1))
        edges[-1] = np.nextafter(hi, np.inf)  # the last event belongs to the last window
    if len(edges) != n_windows + 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"rolling_windows needs {n_windows + 1} increasing edges, got {edges}")
    out = []
    for k in range(n_windows):
        sp = temporal(store, valid_frac, test_frac, window=(edges[k], edges[k + 1]))
        sp.name, sp.params["window_index"] = "rolling_window", k
        out.append(sp)
    return out


SPLITS = {"leave_one_out": leave_one_out, "temporal": temporal, "user_holdout": user_holdout}


def make_split(store: SequenceStore, name: str, **kwargs) -> Split:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; valid splits are {sorted(SPLITS)}")
    valid = [p for p in inspect.signature(SPLITS[name]).parameters if p != "store"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(f"split {name!r}: unknown split_args {unknown}; valid keys are {valid}")
    return SPLITS[name](store, **kwargs)
