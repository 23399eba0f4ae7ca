"""Model registry: ``behaviorseq.models.get("sasrec")`` returns the class; every name round-trips in a test.

A model class carries ``Config`` (a StrictConfig), ``padding`` ("left"/"right"), ``fields`` (the batch
fields it reads besides ``item``) and ``n_negatives`` (sampled negatives per training position, 0 for
none). Retrieval models implement ``loss(batch) -> scalar`` and ``score(batch) -> [B, n_items + 1]``.
Risk models (one sample per user; built by ``models.risk.build``) carry ``Config`` and ``fields`` (of a
folded or flat payment view) and implement ``score(batch) -> [B]`` default logits and
``loss(batch, label) -> scalar`` (BCE).
"""

from __future__ import annotations

import importlib

_REGISTRY: dict[str, type] = {}
# name -> module, imported on first use so that importing the package stays cheap.
_MODULES = {
    "sasrec": "behaviorseq.models.retrieval.sasrec",
    "gru4rec": "behaviorseq.models.retrieval.gru4rec",
    "bert4rec": "behaviorseq.models.retrieval.bert4rec",
    "comirec_sa": "behaviorseq.models.retrieval.comirec_sa",
    "comirec_dr": "behaviorseq.models.retrieval.comirec_dr",
    "mostpop": "behaviorseq.models.retrieval.mostpop",
    "cl4srec": "behaviorseq.models.retrieval.cl4srec",
    "sracl": "behaviorseq.models.retrieval.sracl",
    "din": "behaviorseq.models.ranking.din",
    "twin": "behaviorseq.models.ranking.twin",
    "dare": "behaviorseq.models.ranking.dare",
    "sdim": "behaviorseq.models.ranking.sdim",
    "sim": "behaviorseq.models.ranking.sim",
    "eta": "behaviorseq.models.ranking.eta",
    "hawkes_exp": "behaviorseq.models.tpp.hawkes_exp",
    "nhp": "behaviorseq.models.tpp.nhp",
    "thp": "behaviorseq.models.tpp.thp",
    "attnhp": "behaviorseq.models.tpp.attnhp",
    "prompttpp": "behaviorseq.models.tpp.prompttpp",
    "lbsf": "behaviorseq.models.risk.lbsf",
    "flat_transformer": "behaviorseq.models.risk.flat_seq",
    "flat_gru": "behaviorseq.models.risk.flat_seq",
    "chunked_transformer": "behaviorseq.models.risk.chunked_seq",
}


def register(name: str):
    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def names(family: str | None = None) -> list[str]:
    """Registered names, optionally of one family (the package under models/: retrieval, ranking, tpp,
    risk)."""
    return sorted(n for n, m in _MODULES.items() if family is None or m.split(".")[2] == family)


def family(name: str) -> str:
    return _MODULES[name.lower()].split(".")[2]


def get(name: str) -> type:
    key = name.lower()
    if key not in _MODULES:
        raise KeyError(f"unknown model {name!r}; registered models are {names()}")
    if key not in _REGISTRY:
        importlib.import_module(_MODULES[key])
    return _REGISTRY[key]


def build(name: str, n_items: int, config: dict | None = None, **kwargs):
    """An instance from a config dict (unknown keys rejected); ``kwargs`` are data sizes some families
    need besides the item count (e.g. ``n_categories`` for the CTR models). Ranking and risk models have
    their own ``build`` in their family package."""
    cls = get(name)
    cfg = cls.Config.from_dict(config or {})
    return cls(cfg, n_items, **kwargs)
