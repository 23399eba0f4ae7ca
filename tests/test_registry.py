"""Every registered model name round-trips: it imports, registers under its own name, has a strict
config, and belongs to a family whose tests cover its contract (retrieval, ranking, tpp, risk)."""

import pytest

from behaviorseq import models
from behaviorseq.config import StrictConfig


@pytest.mark.parametrize("name", models.names())
def test_every_name_round_trips(name):
    cls = models.get(name)
    assert cls.name == name and models.get(name.upper()) is cls
    assert issubclass(cls.Config, StrictConfig)
    assert models.family(name) in ("retrieval", "ranking", "tpp", "risk")


def test_families_partition_the_names():
    fams = [models.names(f) for f in ("retrieval", "ranking", "tpp", "risk")]
    assert sorted(sum(fams, [])) == models.names()
    with pytest.raises(KeyError, match="registered models"):
        models.get("no-such-model")


@pytest.mark.parametrize("name", [n for n in models.names() if n != "mostpop"])  # mostpop trains nothing
def test_every_trainable_model_has_a_packaged_config_that_resolves(name):
    from behaviorseq.cli_train import build_config
    from behaviorseq.train import resolve_config

    cfg = resolve_config(build_config(name, None, None, []))  # what `behaviorseq train --model NAME` starts from
    assert cfg.model == name and cfg.train.early_stop_metric  # e.g. a risk model's auc, not the retrieval default


def test_version_flag(capsys):
    from behaviorseq import __version__
    from behaviorseq.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"behaviorseq {__version__}")
