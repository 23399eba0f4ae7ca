"""AttNHP: the attentive neural Hawkes process (Yang, Mei & Eisner, ICLR 2022, "Transformer Embeddings of
Irregularly Spaced Events and Their Participants"), the backbone PromptTPP builds on.

Follows EasyTPP's ``torch_attnhp.py`` (the code PromptTPP ships on). Event j is the token
``[tanh(E k_j); pe(t_j)]`` (sinusoidal time encoding of size ``time_emb_size``). The state at a query time
t on (t_i, t_{i+1}] starts from z^0(t) = 0 and, layer by layer,

    x = [z^{l-1}(t); pe(t)],   z^l(t) = z^{l-1}(t) + tanh(Attn_l(x; events 0..i at layer l-1, and x itself))

where Attn is single-head scaled dot-product attention with query/key/value projections to
``hidden_size`` and no output projection; event tokens pass through the same layers
(``[Attn_l(event j; events <= j); pe(t_j)]``). ``num_heads`` independent stacks run side by side and
``lambda(t) = softplus_beta(W [z_1(t); ...; z_H(t)])`` with a learnable softness per type.

Deviations, one line each:
- Event tokens are encoded once and every query time attends to them (a per-query block mask); EasyTPP
  and PromptTPP re-run the whole [2L]-token encoder once per sample time. Same numbers, S times cheaper.
- Padding keys are masked (EasyTPP masks only the future); EasyTPP's optional LayerNorm (``use_ln``,
  off in PromptTPP's config) is not offered.
- Query times are measured from each sequence's first event (the task's batches).
- The softplus has a learnable softness per type (EasyTPP's ScaledSoftplus, 1 at init = plain softplus);
  PromptTPP's released code uses a plain ``nn.Softplus``.
- Each of the ``num_heads`` stacks starts from the event embeddings (the brief's independent stacks); EasyTPP's
  and PromptTPP's code start stack h + 1 from stack h's final event tokens (their ``event_emb`` is not reset).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.activations import tanh
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.time_encoding import SinusoidalTimeEncoding, scaled_softplus
from behaviorseq.nn.tpp import check_batch, nll_per_event


class AttNHPConfig(StrictConfig):
    hidden_size: int = Field(32, gt=0)  # type-embedding and state size (PromptTPP / EasyTPP config: 32)
    time_emb_size: int = Field(16, gt=0)  # sinusoidal time encoding size (config: 16); must be even
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(2, gt=0)  # independent stacks, not heads of one attention (as in the code)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # on the attention weights (PromptTPP's config: 0)
    integral: Literal["mc", "midpoint"] = "mc"
    integral_samples: int = Field(20, gt=0)  # EasyTPP / PromptTPP: 20 per interval


class _Layer(nn.Module):
    """One single-head attention layer without output projection (EasyTPP's MultiHeadAttention(1, ...))."""

    def __init__(self, d_in: int, d: int, dropout: float):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d_in, d), nn.Linear(d_in, d), nn.Linear(d_in, d)
        self.drop = Dropout(dropout)
        self.scale = 1.0 / math.sqrt(d)


@register("attnhp")
class AttNHP(nn.Module):
    Config = AttNHPConfig
    padding = "right"
    fields = ("time", "dtime", "type", "mask")

    def __init__(self, cfg: AttNHPConfig, num_types: int):
        super().__init__()
        self.cfg, self.num_types = cfg, num_types
        d, dt = cfg.hidden_size, cfg.time_emb_size
        self.type_emb = nn.Embedding(num_types + 1, d, padding_idx=num_types)  # row K = padding
        self.time_enc = SinusoidalTimeEncoding(dt)
        self.stacks = nn.ModuleList(nn.ModuleList(_Layer(d + dt, d, cfg.dropout) for _ in range(cfg.num_layers))
                                    for _ in range(cfg.num_heads))
        self.out = nn.Linear(d * cfg.num_heads, num_types)
        self.log_beta = nn.Parameter(torch.zeros(num_types))  # softplus softness per type, init 1

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Keys and values of the event tokens at every (stack, layer): ``keys[h][n]`` [B, L, d]."""
        check_batch(batch, self.fields)
        mask, t = batch["mask"], batch["time"]
        pe = self.time_enc(t)  # [B, L, dt]
        L = t.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=t.device).tril() & mask[:, None, :]  # [B, L, L]
        causal = causal | torch.eye(L, dtype=torch.bool, device=t.device)  # a padding event sees itself
        keys, values = [], []
        for stack in self.stacks:
            x = torch.cat([torch.tanh(self.type_emb(batch["type"])), pe], -1)  # [B, L, d + dt]
            ks, vs = [], []
            for layer in stack:
                k, v = layer.k(x), layer.v(x)
                ks.append(k), vs.append(v)
                s = torch.einsum("bid,bjd->bij", layer.q(x), k) * layer.scale
                p = layer.drop(torch.softmax(s.masked_fill(~causal, -torch.inf), -1))
                x = torch.cat([p @ v, pe], -1)  # the next layer's event tokens
            keys.append(tuple(ks)), values.append(tuple(vs))
        # nested tuples, not stacked tensors: indexing a stack would cost a zero-filled [H, N, B, L, d]
        # gradient per (stack, layer) in the backward pass
        return {"keys": tuple(keys), "values": tuple(values), "time": t, "mask": mask,
                "seen": causal & mask[:, :, None]}  # seen[b, i, j]: a query on interval i sees event j

    def _prefix(self, state: dict, h: int, n: int) -> tuple[Tensor, Tensor] | None:
        """Extra keys and values [B, L, P, d] that queries on interval i also attend to (PromptTPP's prompts)."""
        return None

    def intensity(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """dt [B, L, S] -> lambda [B, L, S, K]: query tokens at t_i + dt attend to events 0..i. The intervals may
        be a subset of the events (``nn.tpp.state_at``: serving's last interval): keys stay all E events."""
        pe = self.time_enc(state["time"][:, :, None] + dt)  # [B, L, S, dt]
        B, L, S = dt.shape
        E = state["seen"].shape[-1]  # events the queries may attend to (= L unless intervals were selected)
        d = self.cfg.hidden_size
        # 0 where a query on interval i sees event j, -inf elsewhere; added inside the score matmul
        bias = torch.zeros(B, L, S, E, dtype=pe.dtype, device=pe.device)
        bias = bias.masked_fill_(~state["seen"][:, :, None, :], -torch.inf).view(B, L * S, E)
        pe2 = pe.reshape(-1, pe.shape[-1])  # [B L S, dt]
        zs = []
        for h, stack in enumerate(self.stacks):
            z = None  # z^0 = 0
            for n, layer in enumerate(stack):
                # q, k, v of x = [z; pe] in one product; z's and pe's columns apart, so no concatenation
                w = torch.cat([layer.q.weight, layer.k.weight, layer.v.weight])  # [3d, d + dt]
                qkv = nn.functional.linear(pe2, w[:, d:], torch.cat([layer.q.bias, layer.k.bias, layer.v.bias]))
                if z is not None:
                    qkv = torch.addmm(qkv, z.reshape(-1, d), w[:, :d].t())
                q, k, v = qkv.view(B, L * S, 3 * d).chunk(3, -1)  # [B, L S, d] each
                blocks = [torch.baddbmm(bias, q, state["keys"][h][n].transpose(1, 2), alpha=layer.scale)]  # [B, L S, E]
                prefix = self._prefix(state, h, n)
                if prefix is not None:  # the keys of interval i's prefix: one [S, d] @ [d, P] product per interval
                    kp, vp = (x.reshape(B * L, -1, d) for x in prefix)
                    P = kp.shape[1]
                    blocks.append((q.reshape(B * L, S, d) @ kp.transpose(1, 2)).view(B, L * S, P) * layer.scale)
                blocks.append((q * k).sum(-1, keepdim=True) * layer.scale)  # the query itself [B, L S, 1]
                p = layer.drop(torch.softmax(torch.cat(blocks, -1), -1))
                # split, not slicing: each slice's backward would zero-fill a gradient of p's full size
                p = p.split([b.shape[-1] for b in blocks], -1)
                att = torch.baddbmm(p[-1] * v, p[0], state["values"][h][n])  # [B, L S, d]
                if prefix is not None:
                    att = att + (p[1].reshape(B * L, S, P) @ vp).view(B, L * S, d)
                z = tanh(att) if z is None else z + tanh(att)  # nn.activations.tanh: one sigmoid
            zs.append(z)
        return scaled_softplus(self.out(torch.cat(zs, -1)).view(B, L, S, -1), self.log_beta.exp())

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nll_per_event(self, batch, self.cfg.integral_samples, self.cfg.integral)
