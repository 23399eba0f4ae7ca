"""The temporal-point-process branch of a run: a resolved :class:`RunConfig` with ``task: tpp`` -> (data, model,
task), for the models of ``models.tpp`` (NHP, THP, AttNHP, PromptTPP, the exponential Hawkes model).

``train.run.run_experiment`` calls :func:`prepare_tpp` and writes the usual run folder; early stopping
maximises the validation ``loglik`` (nats per event). The data set (``data.dataset``) is either
``synthetic-hawkes`` (``data.synthetic.hawkes``: random exponential-kernel parameters rescaled to one event
per unit time, simulated sequences split by sequence; the protocol records the true model's log-likelihood
per event on the same events, the physical limit) or a folder of EasyTPP files: ``train.pkl``,
``dev.pkl``, ``test.pkl`` (the Gatech / NHP pickles) or ``train|dev|test`` ``.parquet`` / ``.json`` /
``.jsonl`` (EasyTPP's Hugging Face columns). ``data.tpp`` holds :class:`TPPDataConfig`: the generator's
arguments and the task's (:class:`~behaviorseq.tasks.tpp.TPPTaskConfig`: chunk length, integral, thinning).
Pickles run code when loaded: point it only at files you trust.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from behaviorseq import models
from behaviorseq.config import ConfigError, RunConfig, StrictConfig
from behaviorseq.data.eventseq import EventSequences
from behaviorseq.data.loaders.tpp import read_easytpp_hf, read_easytpp_pickle
from behaviorseq.data.synthetic.hawkes import HawkesParams, random_hawkes_params, simulate_hawkes
from behaviorseq.models.tpp.hawkes_exp import HawkesExp
from behaviorseq.tasks.tpp import TPPTask, TPPTaskConfig
from behaviorseq.train.trainer import seed_everything

SYNTHETIC = "synthetic-hawkes"
TPP_METRICS = ("loglik", "acc")  # what early stopping can maximise
_SPLITS = {"train": "train", "valid": "dev", "test": "test"}


class TPPDataConfig(StrictConfig):
    num_types: int = Field(3, ge=1)  # synthetic-hawkes: event types
    n_seqs: int = Field(2000, ge=10)  # synthetic-hawkes: sequences
    max_events: int = Field(50, ge=2)  # synthetic-hawkes: events per sequence
    branching: float = Field(0.6, gt=0.0, lt=1.0)  # synthetic-hawkes: spectral radius of the excitation
    seed: int = Field(0, ge=0)  # synthetic-hawkes: parameters, simulation and split
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # synthetic-hawkes: by sequence
    task: TPPTaskConfig = Field(default_factory=TPPTaskConfig)


def synthetic_hawkes(c: TPPDataConfig) -> tuple[dict[str, EventSequences], HawkesParams]:
    """The ``synthetic-hawkes`` roles and their true parameters (``benchmarks/tpp_hawkes.py``'s set-up)."""
    params = random_hawkes_params(c.num_types, c.branching, seed=c.seed).unit_rate()  # comparable across seeds
    tr, va, te = simulate_hawkes(params, c.n_seqs, max_events=c.max_events, seed=c.seed).seqs.split(c.split, seed=c.seed)
    return {"train": tr, "valid": va, "test": te}, params


def read_easytpp_folder(folder: str | Path) -> dict[str, EventSequences]:
    """train / valid / test from a folder of EasyTPP files (module docstring)."""
    folder = Path(folder)
    out = {}
    for role, stem in _SPLITS.items():
        if (folder / f"{stem}.pkl").exists():
            out[role] = read_easytpp_pickle(folder / f"{stem}.pkl")
            continue
        found = [folder / f"{stem}{s}" for s in (".parquet", ".jsonl", ".json") if (folder / f"{stem}{s}").exists()]
        if not found:
            raise FileNotFoundError(f"TPP data set {folder}: no {stem}.pkl / {stem}.parquet / {stem}.jsonl / "
                                    f"{stem}.json (EasyTPP's file names)")
        out[role] = read_easytpp_hf(found[0])
    return out


def prepare_tpp(cfg: RunConfig) -> tuple[dict[str, EventSequences], object, TPPTask]:
    """(roles, model, task) for a resolved TPP config."""
    c = TPPDataConfig.from_dict(cfg.data.tpp)
    reference = None
    if cfg.data.dataset == SYNTHETIC:
        data, params = synthetic_hawkes(c)
        # The physical limit: the true model's log-likelihood per event on the same events, exact integral.
        truth = HawkesExp.from_params(params.mu, params.adjacency, params.decay)
        ll = TPPTask(data, c.task.model_copy(update={"predict_roles": [], "eval_integral": "exact"}), cfg.train)
        reference = {"true_model_loglik": {r: ll.evaluate(truth, r)["loglik"] for r in ("valid", "test")},
                     "true_params": {"mu": params.mu.tolist(), "adjacency": params.adjacency.tolist(),
                                     "decay": params.decay.tolist()}}
    else:
        folder = Path(cfg.data.dataset)
        if not folder.is_dir() and cfg.data.data_root is not None:
            folder = Path(cfg.data.data_root) / cfg.data.dataset
        if not folder.is_dir():
            raise FileNotFoundError(f"TPP data set {cfg.data.dataset!r}: not {SYNTHETIC!r} and not a folder")
        data = read_easytpp_folder(folder)
    task = TPPTask(data, c.task, cfg.train, reference)
    seed_everything(cfg.train.seed)
    model = models.build(cfg.model, task.num_types, cfg.model_args)
    if cfg.train.early_stop_metric == "acc" and "valid" not in c.task.predict_roles:
        raise ConfigError("train.early_stop_metric=acc needs next-event prediction on the validation set: add "
                          "'valid' to data.tpp.task.predict_roles (thinning there costs time each epoch)")
    if c.task.eval_integral == "exact" and not hasattr(model, "compensator"):
        raise ConfigError(f"data.tpp.task.eval_integral=exact needs a model with a closed-form compensator; "
                          f"{cfg.model} has none (use mc or midpoint)")
    return data, model, task


__all__ = ["SYNTHETIC", "TPPDataConfig", "TPP_METRICS", "prepare_tpp", "read_easytpp_folder", "synthetic_hawkes"]
