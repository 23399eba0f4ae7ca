"""The packaged run configurations: what ``behaviorseq train --model M --data D`` starts from, for the Python API
too (``run_experiment(build_config("sasrec", "beauty", overrides=["train.epochs=50"]), "runs/x")`` is the CLI's run).

Resolution, later wins: the model's packaged YAML (``behaviorseq/configs/<model>.yaml``), a dataset-specific one
(``<model>_<dataset>.yaml``) if packaged, an evaluation protocol (``protocol_<name>.yaml``), a config file, then
``key=value`` overrides (``train.lr=0.001``, ``model.hidden_size=64``, ``eval.ks=[10,20]``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from behaviorseq.config import ConfigError, parse_overrides


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def packaged_config(name: str) -> dict:
    f = resources.files("behaviorseq") / "configs" / f"{name}.yaml"
    return yaml.safe_load(f.read_text()) or {} if f.is_file() else {}


def build_config(model: str, data: str | None = None, config_file: str | None = None,
                 overrides: list[str] | tuple[str, ...] = (), protocol: str | None = None) -> dict:
    cfg: dict = {"model": model}
    cfg = _merge(cfg, packaged_config(model))
    if data:
        cfg = _merge(cfg, packaged_config(f"{model}_{data.lower()}"))
    if protocol:
        proto = packaged_config(f"protocol_{protocol}")
        if not proto:
            known = sorted(p.name[9:-5] for p in (resources.files("behaviorseq") / "configs").iterdir()
                           if p.name.startswith("protocol_"))
            raise ConfigError(f"unknown protocol {protocol!r}; packaged protocols: {known}")
        cfg = _merge(cfg, proto)
    if config_file:
        user = yaml.safe_load(Path(config_file).read_text()) or {}
        if "model_config" in user:  # the file's spelling of model_args: merged like it, not in its place
            mc = user.pop("model_config") or {}
            user["model_args"] = _merge(user.get("model_args") or {}, mc)
        cfg = _merge(cfg, user)
    ov = parse_overrides(overrides)
    if "model" in ov and isinstance(ov["model"], dict):  # model.x=... -> the model's own config
        ov["model_args"] = ov.pop("model")
    cfg = _merge(cfg, ov)
    if data:
        cfg = _merge(cfg, {"data": {"dataset": data}})
    return cfg
