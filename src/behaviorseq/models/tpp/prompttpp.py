"""PromptTPP: continual event sequence modelling with a continuous-time retrieval prompt pool
(Xue, Wang, Chu, Zhang, Zhou & Mei, NeurIPS 2023, arXiv 2310.04993), on the AttNHP backbone (``attnhp.py``).

Every layer of every stack has two pools (one prefixes keys, one values) of ``pool_size`` entries, each a
structural prompt P_m [prompt_length, hidden_size] and a key kappa_m [hidden_size + time_emb_size]. A prompt
token is ``[P_m row; pe(tau_hat)]`` with tau_hat the mean inter-event time seen so far. The retrieval query
is the mean of the layer's event tokens seen so far; the ``top_n`` entries by cosine similarity are
selected and their N * prompt_length tokens, through the layer's key (value) projection, are prefixed to
the keys (values) that a token attends to. Loss (per event): ``NLL - pull_weight * mean cos(q, kappa_sel)``,
the L2P key-pull surrogate that draws selected keys towards their queries.

Deviations from the released code (yanyanSann/PromptTPP @8a9831c), each fixing a defect or leak:
- Retrieval is causal and per position: the query and tau_hat at event i use events 0..i only (the code
  averages the whole sequence, query tokens and padding included, so early intensities see later events).
- Selection is per sequence, never batch-wise: a prediction does not depend on the rest of the batch.
- Prompts are their own key/value block per position, so no causal-mask column shift can occur.
- Sizes come from the config (no hard-coded 32/16); events are encoded once for all sample times.
- The pull term is a mean per selected key, on the scale of the per-event NLL (the code sums the NLL over
  the batch and averages the pull term); the alternating requires_grad flip of the pools is not copied.
- Warm start (the continual protocol's fine-tuning) is a full ``load_state_dict`` done by the caller.
- The intensity keeps AttNHP's per-type softplus softness (1 at init: the code's plain softplus).
- Optional, off by default: ``diversify`` (L2P's frequency-weighted selection in training, ``end_task``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from behaviorseq.models import register
from behaviorseq.models.tpp.attnhp import AttNHP, AttNHPConfig
from behaviorseq.nn.tpp import check_batch, loglik


class PromptTPPConfig(AttNHPConfig):
    pool_size: int = Field(10, gt=0)  # M (official config: 10)
    prompt_length: int = Field(5, gt=0)  # L_p (5)
    top_n: int = Field(5, gt=0)  # N (5)
    pull_weight: float = Field(0.1, ge=0.0)  # alpha (0.1 in the code, there on another scale: re-tune)
    diversify: bool = False  # L2P's optional diversified selection (not in PromptTPP's code): see end_task()

    @model_validator(mode="after")
    def _top_n_fits(self) -> PromptTPPConfig:
        if self.top_n > self.pool_size:
            raise ValueError(f"top_n {self.top_n} exceeds pool_size {self.pool_size}")
        return self


@register("prompttpp")
class PromptTPP(AttNHP):
    Config = PromptTPPConfig

    def __init__(self, cfg: PromptTPPConfig, num_types: int):
        super().__init__(cfg, num_types)
        H, N, M = cfg.num_heads, cfg.num_layers, cfg.pool_size
        d, D = cfg.hidden_size, cfg.hidden_size + cfg.time_emb_size
        # [stack, layer, key/value pool, entry, ...]; uniform(-1, 1) as in the code and L2P
        self.prompts = nn.Parameter(torch.empty(H, N, 2, M, cfg.prompt_length, d).uniform_(-1, 1))
        self.prompt_keys = nn.Parameter(torch.empty(H, N, 2, M, D).uniform_(-1, 1))
        if cfg.diversify:  # selection counts in training, and their per-pool shares up to the last task
            self.register_buffer("select_counts", torch.zeros(H, N, 2, M))
            self.register_buffer("select_freq", torch.zeros(H, N, 2, M))

    def end_task(self) -> None:
        """With ``diversify`` (L2P, Wang et al. CVPR 2022, Sec. 3.3, "optionally diversifying prompt-selection";
        an option, not PromptTPP's recipe): called by a continual protocol between windows. From then on,
        training selects the top_n entries by the cosine distance (1 - cos) times each entry's share of the
        selections made in training so far, so the entries earlier windows used most are avoided and new
        windows train other prompts; evaluation selects by the cosine alone (no task id at test time). Without
        ``diversify`` there is nothing to record and this does nothing."""
        if not self.cfg.diversify:
            return
        c = self.select_counts
        self.select_freq.copy_(c / c.sum(-1, keepdim=True).clamp_min(1))

    def _select(self, h: int, n: int, cos: Tensor) -> tuple[Tensor, Tensor]:
        """cos [2, B, L, M] (query vs. key, per pool) -> the cosines and ids of the selected entries [2, B, L, N]."""
        if self.training and self.cfg.diversify and self.select_freq[h, n].sum() > 0:
            dist = (1 - cos) * (self.select_freq[h, n][:, None, None] + 1e-6)  # unused entries: by cosine
            ids = dist.topk(self.cfg.top_n, -1, largest=False).indices
            return cos.gather(-1, ids), ids
        return cos.topk(self.cfg.top_n, -1)

    def _retrieve(self, h: int, n: int, x: Tensor, tau: Tensor, mask: Tensor, layer) -> tuple:
        """Prompt keys and values per position ([B, L, P, d] each), selected ids [2, B, L, top_n] and the
        summed cosine of the selected keys over real positions (both pools)."""
        m = mask[..., None].float()
        q = torch.cumsum(x * m, 1) / torch.cumsum(m, 1).clamp_min(1)  # [B, L, D]: mean of tokens 0..i
        cos = torch.einsum("bld,kmd->kblm", F.normalize(q, dim=-1), F.normalize(self.prompt_keys[h, n], dim=-1))
        top, ids = self._select(h, n, cos)
        if self.training and self.cfg.diversify:
            with torch.no_grad():
                real = ids[:, mask]  # [2, n_real, N]
                for k in range(2):
                    self.select_counts[h, n, k] += torch.bincount(real[k].flatten(), minlength=cos.shape[-1])
        P = self.prompts[h, n]  # [2, M, L_p, d]
        sel = torch.stack([P[k][ids[k]] for k in range(2)])  # [2, B, L, N, L_p, d]
        sel = sel.flatten(3, 4)  # [2, B, L, N * L_p, d]
        pe = self.time_enc(tau)[None, :, :, None].expand(2, -1, -1, sel.shape[3], -1)  # [2, B, L, P, dt]
        tokens = torch.cat([sel, pe], -1)
        pull = (top.sum(-1) * mask).sum()
        return layer.k(tokens[0]), layer.v(tokens[1]), ids, pull

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        check_batch(batch, self.fields)
        mask, t = batch["mask"], batch["time"]
        pe = self.time_enc(t)
        L = t.shape[1]
        causal = (torch.ones(L, L, dtype=torch.bool, device=t.device).tril() & mask[:, None, :]) | \
            torch.eye(L, dtype=torch.bool, device=t.device)
        dts = torch.where(mask, batch["dtime"], torch.zeros_like(batch["dtime"]))
        seen = torch.cumsum(mask.float(), 1)
        tau = torch.cumsum(dts, 1) / (seen - 1).clamp_min(1)  # mean gap among events 0..i (0 at i = 0)
        keys, values, pk, pv, ids = [], [], [], [], []
        pull = t.new_zeros(())
        for h, stack in enumerate(self.stacks):
            x = torch.cat([torch.tanh(self.type_emb(batch["type"])), pe], -1)
            ks, vs, pks, pvs, idl = [], [], [], [], []
            for n, layer in enumerate(stack):
                kp, vp, sel, pl = self._retrieve(h, n, x, tau, mask, layer)
                pull = pull + pl
                q, k, v = layer.q(x), layer.k(x), layer.v(x)
                s_ev = torch.einsum("bid,bjd->bij", q, k).masked_fill(~causal, -torch.inf)
                s_pr = torch.einsum("bid,bipd->bip", q, kp)
                p = layer.drop(torch.softmax(torch.cat([s_ev, s_pr], -1) * layer.scale, -1))
                p_ev, p_pr = p.split([L, p.shape[-1] - L], -1)
                x = torch.cat([p_ev @ v + torch.einsum("bip,bipd->bid", p_pr, vp), pe], -1)
                ks.append(k), vs.append(v), pks.append(kp), pvs.append(vp), idl.append(sel)
            keys.append(tuple(ks)), values.append(tuple(vs))  # nested tuples: see AttNHP.encode
            pk.append(tuple(pks)), pv.append(tuple(pvs)), ids.append(torch.stack(idl))
        n_sel = mask.sum() * len(self.stacks) * len(self.stacks[0]) * 2 * self.cfg.top_n
        return {"keys": tuple(keys), "values": tuple(values), "prompt_keys": tuple(pk),
                "prompt_values": tuple(pv), "prompt_ids": torch.stack(ids),  # [H, N, 2, B, L, top_n]
                "pull": pull / n_sel.clamp_min(1), "time": t, "mask": mask, "seen": causal & mask[:, :, None]}

    def _prefix(self, state: dict, h: int, n: int) -> tuple[Tensor, Tensor]:
        """Queries on interval i attend to the prompts selected at event i, events 0..i and themselves
        (AttNHP's ``intensity`` does the rest)."""
        return state["prompt_keys"][h][n], state["prompt_values"][h][n]  # [B, L, P, d] each

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        state = self.encode(batch)
        ll = loglik(self, batch, self.cfg.integral_samples, self.cfg.integral, state=state)
        nll = -(ll.per_event.sum() / ll.mask.sum().clamp_min(1))
        return nll - self.cfg.pull_weight * state["pull"]
