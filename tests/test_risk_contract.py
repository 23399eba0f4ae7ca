"""Contract of the risk family, over ``models.names("risk")``: strict config, a build from the default
config, ``score`` -> finite [B] logits, ``loss`` a finite scalar (the BCE of those logits) whose gradient
reaches every trainable parameter, and the registry round trip. Tiny planted payments, as in test_lbsf."""

from __future__ import annotations

import pytest
import torch

from behaviorseq import models
from behaviorseq.config import ConfigError, StrictConfig
from behaviorseq.data.folding import fold_by_merchant, last_n
from behaviorseq.data.synthetic.payments import PaymentsConfig, generate_payments
from behaviorseq.models.risk import build
from behaviorseq.nn.payment_fields import amount_edges, hash_char_ngrams
from behaviorseq.tasks.default_risk import to_tensors

M, LM, B = 3, 4, 6
MAX_LEN = {"folded": LM, "flat": (M + 1) * LM}  # build's max_len for each view


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def payments():
    d, _ = generate_payments(PaymentsConfig(n_users=40, seed=0))
    views = {"folded": fold_by_merchant(d, window_days=180.0, n_top=M, max_per_merchant=LM),
             "flat": last_n(d, window_days=180.0, max_len=MAX_LEN["flat"])}
    batches = {k: {f: t[:B] for f, t in to_tensors(v).items()} for k, v in views.items()}
    tables = hash_char_ngrams(d.merchant_names, 256), hash_char_ngrams(d.descriptions, 256), amount_edges(d.amount, 8)
    return tables, batches


def make(name: str, payments, config: dict | None = None):
    """The model built by ``models.risk.build`` and the tiny batch of the one view holding all its fields."""
    tables, batches = payments
    view = [k for k, b in batches.items() if set(models.get(name).fields) <= set(b)]
    assert len(view) == 1, (name, view)
    torch.manual_seed(0)
    return build(name, *tables, MAX_LEN[view[0]], config), batches[view[0]]


def test_risk_family_lists_lbsf_and_its_no_folding_baselines():
    assert models.names("risk") == ["chunked_transformer", "flat_gru", "flat_transformer", "lbsf"]


@pytest.mark.parametrize("name", models.names("risk"))
def test_registry_round_trip_and_strict_config(name):
    cls = models.get(name)
    assert cls.name == name and models.family(name) == "risk"
    assert issubclass(cls.Config, StrictConfig)
    with pytest.raises(ConfigError, match="valid keys"):
        cls.Config.from_dict({"no_such_key": 1})


@pytest.mark.parametrize("name", models.names("risk"))
def test_score_and_loss_contract(name, payments):
    model, batch = make(name, payments)
    assert isinstance(model, models.get(name)) and model.cfg == model.Config()
    label = torch.tensor([0.0, 1.0] * (B // 2))
    model.eval()
    with torch.no_grad():
        s = model.score(batch)
        assert s.shape == (B,) and s.dtype == torch.float32 and torch.isfinite(s).all()
        # score is the logit that loss trains (default pos_weight 1).
        bce = torch.nn.functional.binary_cross_entropy_with_logits(s, label)
        torch.testing.assert_close(model.loss(batch, label), bce)
    model.train()
    loss = model.loss(batch, label)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    dead = [n for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]
    assert not dead, f"{name}: no gradient reaches {dead}"


@pytest.mark.parametrize("name,kind", [("flat_transformer", "transformer"), ("flat_gru", "gru")])
def test_flat_names_fix_their_kind(name, kind, payments):
    model, _ = make(name, payments)
    assert model.cfg.kind == kind and hasattr(model, "gru") == (kind == "gru")
    with pytest.raises(ConfigError, match="kind"):
        models.get(name).Config.from_dict({"kind": "gru" if kind == "transformer" else "transformer"})


def test_chunked_transformer_chunks_back_from_the_latest_payment(payments):
    model, batch = make("chunked_transformer", payments, {"chunk": 3})  # N = 16: 6 chunks of 3
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :7] = True  # 7 payments: chunks hold ranks 0-2, 3-5 and the oldest alone
    slot, valid = model.chunks(mask)
    assert slot[0, :7].tolist() == [8, 3, 4, 5, 0, 1, 2]  # oldest first inside each chunk, chunk 0 latest
    assert valid[0].sum(1).tolist() == [3, 3, 1, 0, 0, 0] and not valid[1].any()
    assert (slot[0, 7:] == 18).all()  # padding goes to the spare slot
    model.eval()
    with torch.no_grad():  # padding columns beyond the payments never change a user's logit
        wide = {k: torch.cat([v, torch.zeros_like(v[:, :4])], 1) if v.dim() == 2 else v for k, v in batch.items()}
        torch.testing.assert_close(model.score(wide), model.score(batch))
        # the order of the payments matters (chunks keep chronology), unlike LBSF's merchant slots
        n = int(batch["mask"][0].sum())
        flipped = {k: v.clone() for k, v in batch.items()}
        for k in flipped:
            if flipped[k].dim() == 2:
                flipped[k][0, :n] = flipped[k][0, :n].flip(0)
        assert not torch.allclose(model.score(flipped)[0], model.score(batch)[0])
