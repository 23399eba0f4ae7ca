"""The packaged run configurations: what ``behaviorseq train --model M --data D`` starts from, for the Python API
too (``run_experiment(build_config("sasrec", "beauty", overrides=["train.epochs=50"]), "runs/x")`` is the CLI's run).

Resolution, later wins: the model's packaged YAML (``behaviorseq/configs/<model>.yaml``), a dataset-specific one
(``<model>_<dataset>.yaml``) if packaged, an evaluation protocol (``protocol_<name>.yaml``), a config file, then
``key=value`` overrides (``train.lr=0.001``, ``model.hidden_size=64``, ``eval.ks=[10,20]``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from behaviorseq.config import ConfigError, load_yaml, parse_overrides


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def packaged_config(name: str) -> dict:
    f = resources.files("behaviorseq") / "configs" / f"{name}.yaml"
    return (load_yaml(f.read_text(), str(f)) or {}) if f.is_file() else {}


SECTIONS = ("data", "train", "eval", "model_args")


def _check_sections(cfg: dict, source: str) -> None:
    """A section given as a value or left empty would replace the packaged one whole: name it instead."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: a config is a mapping of sections (data, train, eval, model_args, ...), "
                          f"got {type(cfg).__name__}")
    for k in SECTIONS:
        if k in cfg and not isinstance(cfg[k], dict):
            raise ConfigError(f"{source}: {k} must be a section of keys, got {cfg[k]!r} (an empty section would "
                              "drop every packaged setting of it)")


def _model_args(cfg: dict, source: str) -> dict:
    """``model.x`` / ``model_config`` spellings of the model's own config, merged into ``model_args``."""
    cfg = dict(cfg)
    for alias in ("model_config", "model"):
        if isinstance(cfg.get(alias), dict) or (alias == "model_config" and alias in cfg):
            cfg["model_args"] = _merge(cfg.get("model_args") or {}, cfg.pop(alias) or {})
    return cfg


def build_config(model: str, data: str | None = None, config_file: str | None = None,
                 overrides: list[str] | tuple[str, ...] = (), protocol: str | None = None) -> dict:
    model = model.lower()  # models are registered case-blind; the packaged files are lower-case
    user: dict = {}
    if config_file:
        user = load_yaml(Path(config_file).read_text(), str(config_file))
        user = {} if user is None else user
        _check_sections(user, str(config_file))
        user = _model_args(user, str(config_file))
    ov = _model_args(parse_overrides(overrides), "overrides")
    _check_sections(ov, "overrides")
    for source, d in ((str(config_file), user), ("an override", ov)):
        if "model" in d and str(d["model"]).lower() != model:  # it would train one model with another's settings
            raise ConfigError(f"{source} names model {d['model']!r}, the command --model {model!r}: give one")
    # the data set whose packaged settings apply: --data, else the overrides' or the file's data.dataset
    dataset = data or (ov.get("data") or {}).get("dataset") or (user.get("data") or {}).get("dataset")
    cfg: dict = {"model": model}
    cfg = _merge(cfg, packaged_config(model))
    if isinstance(dataset, str) and dataset:
        cfg = _merge(cfg, packaged_config(f"{model}_{dataset.lower()}"))
    if protocol:
        proto = packaged_config(f"protocol_{protocol}")
        if not proto:
            known = sorted(p.name[9:-5] for p in (resources.files("behaviorseq") / "configs").iterdir()
                           if p.name.startswith("protocol_"))
            raise ConfigError(f"unknown protocol {protocol!r}; packaged protocols: {known}")
        cfg = _merge(cfg, proto)
    cfg = _merge(cfg, user)
    cfg = _merge(cfg, {**ov, "model": model})
    if data:
        cfg = _merge(cfg, {"data": {"dataset": data}})
    return cfg
