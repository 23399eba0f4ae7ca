"""Rule extraction for risky clusters (FinDeepBehaviorCluster, arXiv 2101.04285, "rule extraction" step;
brief section 1): a shallow decision tree on the risk experts' intuitive features, target "member of the
risky cluster" against the rest, read out as conjunctive rules.

Every rule is re-counted on the data it is reported on (not read from the tree's weighted leaf values):
    n_covered = #rows satisfying the rule,  n_true = #covered rows with y = 1,  n_pos = #(y = 1), n = #rows
    precision = n_true / n_covered          coverage = n_covered / n          recall = n_true / n_pos
    lift = precision / (n_pos / n)
Reconstructed choices, one line each: a CART tree (sklearn) rather than RIPPER / skope-rules; leaves predicted
positive under ``class_weight`` become rules; bounds on one feature are merged into the tightest one.
With ``holdout`` > 0 the tree is fitted and the rules chosen on part of the rows and counted on the rest
(``Rule.scored_on = "held-out"``); with 0 they are counted on the rows they were learned from ("in-sample").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.tree import DecisionTreeClassifier

__all__ = ["Condition", "Rule", "evaluate_rule", "extract_rules"]


@dataclass(frozen=True)
class Condition:
    feature: str
    op: str  # "<=" or ">"
    threshold: float

    def holds(self, column: np.ndarray) -> np.ndarray:
        return column <= self.threshold if self.op == "<=" else column > self.threshold

    def text(self) -> str:
        thr = repr(float(self.threshold))  # the shortest exact form: the rule read is the rule applied (.4g was not)
        return f"{self.feature} {self.op} {thr[:-2] if thr.endswith('.0') else thr}"


@dataclass(frozen=True)
class Rule:
    conditions: tuple[Condition, ...]
    target: str
    n_covered: int
    n_true: int
    n_pos: int
    n: int
    scored_on: str = "in-sample"  # or "held-out": rows the tree never saw

    @property
    def precision(self) -> float:
        return self.n_true / self.n_covered if self.n_covered else 0.0

    @property
    def coverage(self) -> float:
        return self.n_covered / self.n if self.n else 0.0

    @property
    def recall(self) -> float:
        return self.n_true / self.n_pos if self.n_pos else 0.0

    @property
    def lift(self) -> float:
        return self.precision / (self.n_pos / self.n) if self.n_pos else 0.0

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.feature for c in self.conditions))

    def text(self) -> str:
        cond = " AND ".join(c.text() for c in self.conditions) or "TRUE"
        return (f"IF {cond} THEN {self.target}  [precision {self.precision:.3f}, coverage {self.coverage:.2%}, "
                f"recall {self.recall:.3f}, lift {self.lift:.1f}; {self.n_true}/{self.n_covered} covered rows are "
                f"{self.target}]")

    def applies(self, X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        """Bool [n]: the rows of ``X`` [n, F] (columns named by ``feature_names``, any order or superset of
        the rule's features) that the rule flags: how a rule is deployed on new users, no labels needed."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(feature_names) != X.shape[1]:
            raise ValueError(f"rules: X must be [n, {len(feature_names)}] for {len(feature_names)} feature names, "
                             f"got shape {X.shape}")
        col = {f: i for i, f in enumerate(feature_names)}
        missing = [f for f in self.features if f not in col]
        if missing:
            raise ValueError(f"rules: the rule reads {missing}, which X lacks; its columns are {list(feature_names)}")
        if not np.isfinite(X[:, [col[f] for f in self.features]]).all():
            raise ValueError(f"rules: X must be finite (no NaN/inf) in the rule's features {list(self.features)}")
        out = np.ones(X.shape[0], dtype=bool)
        for c in self.conditions:
            out &= c.holds(X[:, col[c.feature]])
        return out

    def to_dict(self) -> dict:
        return {"rule": self.text(), "features": list(self.features), "precision": self.precision,
                "coverage": self.coverage, "recall": self.recall, "lift": self.lift, "n_covered": self.n_covered,
                "n_true": self.n_true, "n_pos": self.n_pos, "n": self.n, "scored_on": self.scored_on,
                "target": self.target, "conditions": [[c.feature, c.op, c.threshold] for c in self.conditions]}

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        """The rule ``to_dict`` wrote (e.g. read back from JSON to deploy it); the counts are the fit's."""
        conds = []
        for f, op, t in d["conditions"]:
            if op not in ("<=", ">"):
                raise ValueError(f"rules: condition operator must be '<=' or '>', got {op!r}")
            conds.append(Condition(str(f), op, float(t)))
        return cls(tuple(conds), d.get("target", "risky"), int(d["n_covered"]), int(d["n_true"]), int(d["n_pos"]),
                   int(d["n"]), d.get("scored_on", "in-sample"))


def _check(X: np.ndarray, y: np.ndarray, feature_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"rules: X must be a non-empty 2-d array [n, n_features], got shape {X.shape}")
    if len(feature_names) != X.shape[1]:
        raise ValueError(f"rules: feature_names has {len(feature_names)} names for {X.shape[1]} columns of X")
    if y.shape != (X.shape[0],):
        raise ValueError(f"rules: y must have shape ({X.shape[0]},), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("rules: y must be binary (0/1 or bool)")
    if not np.isfinite(X).all():
        raise ValueError("rules: X must be finite (no NaN/inf)")
    return X, y.astype(bool)


def evaluate_rule(conditions: Sequence[Condition], X: np.ndarray, y: np.ndarray, feature_names: Sequence[str],
                  target: str = "risky", scored_on: str = "in-sample") -> Rule:
    """Count a conjunction of conditions on ``X`` [n, F] against binary ``y`` [n]."""
    X, y = _check(X, y, feature_names)
    col = {f: i for i, f in enumerate(feature_names)}
    unknown = [c.feature for c in conditions if c.feature not in col]
    if unknown:
        raise ValueError(f"rules: unknown feature(s) {unknown}; the features are {list(feature_names)}")
    covered = np.ones(len(y), dtype=bool)
    for c in conditions:
        covered &= c.holds(X[:, col[c.feature]])
    return Rule(tuple(conditions), target, int(covered.sum()), int((covered & y).sum()), int(y.sum()), len(y),
                scored_on)


def _tighten(conds: list[Condition]) -> tuple[Condition, ...]:
    """One upper and one lower bound per feature (the tightest), in first-seen order."""
    best: dict[tuple[str, str], Condition] = {}
    for c in conds:
        key = (c.feature, c.op)
        old = best.get(key)
        if old is None or (c.threshold < old.threshold if c.op == "<=" else c.threshold > old.threshold):
            best[key] = c
    return tuple(best[k] for k in dict.fromkeys((c.feature, c.op) for c in conds))


def extract_rules(X: np.ndarray, y: np.ndarray, feature_names: Sequence[str], max_depth: int = 3,
                  min_samples_leaf: int = 5, min_precision: float = 0.5, class_weight: str | None = "balanced",
                  target: str = "risky", random_state: int = 0, holdout: float = 0.0) -> list[Rule]:
    """Rules for ``y`` = 1 from a depth-``max_depth`` tree on ``X`` [n, F] (raw units, so thresholds read
    as-is); the positive leaves with re-counted precision >= ``min_precision``, most true positives first.
    ``holdout`` in (0, 1): that share of the rows (stratified by y, drawn with ``random_state``) is kept out of
    the fit and the choice, and the returned counts are theirs, so their precision may fall below
    ``min_precision`` (which the fit rows meet). A class too small to appear on both sides gives no rules."""
    X, y = _check(X, y, feature_names)
    if not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError(f"rules: max_depth must be an int >= 1, got {max_depth!r}")
    if not 0.0 <= min_precision <= 1.0:
        raise ValueError(f"rules: min_precision must be in [0, 1], got {min_precision}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"rules: holdout must be in [0, 1), got {holdout}")
    test = np.zeros(len(y), dtype=bool)
    if holdout > 0:
        rng = np.random.default_rng(random_state)
        for cls in (False, True):
            idx = rng.permutation(np.flatnonzero(y == cls))
            test[idx[:int(round(holdout * len(idx)))]] = True
    Xf, yf = X[~test], y[~test]
    if not yf.any() or yf.all() or (holdout > 0 and not y[test].any()):
        return []
    tree = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf, class_weight=class_weight,
                                  random_state=random_state).fit(Xf, yf)
    t = tree.tree_
    rules: list[Rule] = []
    stack: list[tuple[int, list[Condition]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        if t.children_left[node] == -1:  # leaf
            if tree.classes_[int(np.argmax(t.value[node][0]))]:
                cond = _tighten(path)
                fit = evaluate_rule(cond, Xf, yf, feature_names, target)
                if fit.precision >= min_precision:  # chosen and ordered on the fit rows; reported on the held-out
                    rules.append((fit, evaluate_rule(cond, X[test], y[test], feature_names, target, "held-out")
                                  if holdout > 0 else evaluate_rule(cond, X, y, feature_names, target)))
            continue
        f, thr = feature_names[t.feature[node]], float(t.threshold[node])
        stack.append((t.children_right[node], [*path, Condition(f, ">", thr)]))
        stack.append((t.children_left[node], [*path, Condition(f, "<=", thr)]))
    # the order is part of the choice (the top rule is what gets reported): by the fit rows' counts, never by the
    # held-out rows' (it was, so the reported top rule was picked on the rows that scored it)
    return [r for _, r in sorted(rules, key=lambda fr: (-fr[0].n_true, -fr[0].precision))]
