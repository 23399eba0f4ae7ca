"""The CTR branch of a run: a resolved :class:`RunConfig` with ``task: ctr`` -> (data, model, task).

``train.run.run_experiment`` calls :func:`prepare_ctr` instead of its retrieval ``prepare`` and writes the
same run folder. The data set comes from ``data.ctr_datasets`` (``data.dataset`` names it, ``data.ctr``
holds its typed arguments); the model is a ranking model (``models.ranking``) built with the data's
item and category counts; the task is :class:`~behaviorseq.tasks.ctr.CTRTask`.
"""

from __future__ import annotations

from behaviorseq.config import ConfigError, RunConfig
from behaviorseq.data.ctr import CTRData
from behaviorseq.data.ctr_datasets import open_ctr_dataset
from behaviorseq.models.ranking import build
from behaviorseq.tasks.ctr import CTRTask
from behaviorseq.train.trainer import seed_everything

CTR_METRICS = ("auc", "gauc_user", "gauc_category")  # what early stopping can maximise


def prepare_ctr(cfg: RunConfig) -> tuple[CTRData, object, CTRTask]:
    """(data, model, task) for a resolved CTR config."""
    max_len = int(cfg.model_args["max_len"])  # resolve_config fills it: the data's window is the model's
    data = open_ctr_dataset(cfg.data.dataset, cfg.data.ctr, root=cfg.data.data_root, cache_dir=cfg.data.cache_dir,
                            max_len=max_len)
    if "category" not in data.item_fields:
        raise ConfigError(f"CTR dataset {data.name!r} has no item field 'category'; ranking models need one "
                          f"(it has {sorted(data.item_fields)})")
    seed_everything(cfg.train.seed)
    model = build(cfg.model, data.n_items, data.vocab_size("category") - 1, cfg.model_args)
    task = CTRTask.create(data, model, cfg.train, cfg.eval)
    return data, model, task


__all__ = ["CTR_METRICS", "prepare_ctr"]
