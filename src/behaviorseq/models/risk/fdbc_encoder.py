"""FinDeepBehaviorCluster's sequence encoder: "FinDeepBehaviorCluster: A Clustering-Based Fraud Detection
Framework" (Min, Liang, Yin, Wang, Li, Lal; eBay; AAAI-21 KDF workshop; arXiv 2101.04285).

The abstract confirms a time-attention Bi-LSTM learned without labels on click streams; the equations are
the project brief's reconstruction (brief section 1):
    x_i = [E_type(k_i) ; phi(log1p dt_i)]                     phi: Linear + tanh
    h_i = BiLSTM(x)_i in R^{2H}
    a_i = v^T tanh(W h_i + b) - softplus(gamma) * log1p(tau_i),  tau_i = time from click i to the last click
    z = sum_i softmax_{non-pad}(a)_i h_i                          (``pooling="mean"``: the masked mean of h)
Unsupervised objectives (``objective``), both decoding from z alone:
    "autoencoder": an LSTM decoder started from z reconstructs every event (type: cross-entropy,
                   log1p dt: MSE), newest first;
    "next_event":  z encodes the session without its last ``next_k`` events and the decoder predicts them.

Deviations / reconstructions, one line each:
- The decoder is unconditioned (input: a step embedding, not the previous event), so that everything it
  reconstructs has to pass through z (Srivastava et al., ICML 2015); the paper does not say.
- Reconstruction runs newest event first (checkout backwards), as in Srivastava et al.'s reversed targets.
- tau is derived from dt inside the model (sum of the later gaps), not read from the batch.
- "next_event" predicts the held-out tail from z of the prefix (one z per session), not every next event
  from every position: a Bi-LSTM's position states see the future, and the objective must train z.
  ``embed`` then encodes the whole session, which training never did (the last next_k events were held out).
- ``fit_encoder`` / ``embed`` are a minimal Adam loop and a batched inference helper, not the Trainer.

Not in the model registry: it is unsupervised (no label; ``forward`` returns embeddings, not one logit per
user), so it does not fit the ``risk`` family's supervised contract; import it directly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from behaviorseq.config import StrictConfig

FIELDS = ("types", "dt")


class FDBCEncoderConfig(StrictConfig):
    type_dim: int = Field(32, gt=0)  # brief: d_type 32-64
    time_dim: int = Field(8, gt=0)  # brief: d_time 8-16
    hidden: int = Field(64, gt=0)  # per direction; brief: H 64-128
    pooling: Literal["attention", "mean"] = "attention"  # the paper's time attention; mean for the ablation
    time_decay: bool = True  # the -softplus(gamma) log1p(tau) term of the attention logit
    objective: Literal["autoencoder", "next_event"] = "autoencoder"  # the paper says only "unsupervised"
    next_k: int = Field(4, gt=0)  # events held out and predicted by "next_event"
    decoder_hidden: int = Field(128, gt=0)
    dt_loss_weight: float = Field(1.0, ge=0.0)  # weight of the log1p-dt MSE against the type cross-entropy


class FDBCEncoder(nn.Module):
    """Batch fields: ``types`` int64 [B, L] page ids right-padded with 0, ``dt`` float [B, L] seconds since
    the previous click. ``forward`` returns ``z`` [B, 2H], ``alpha`` [B, L] (0 at padding), ``h`` [B, L, 2H]."""

    Config = FDBCEncoderConfig
    padding = "right"

    def __init__(self, cfg: FDBCEncoderConfig, n_types: int, max_len: int = 512):
        super().__init__()
        self.cfg, self.n_types, self.max_len = cfg, n_types, max_len
        H = cfg.hidden
        self.type_embedding = nn.Embedding(n_types + 1, cfg.type_dim, padding_idx=0)
        self.time_proj = nn.Linear(1, cfg.time_dim)
        self.lstm = nn.LSTM(cfg.type_dim + cfg.time_dim, H, batch_first=True, bidirectional=True)
        self.att_proj = nn.Linear(2 * H, 2 * H)  # W, b
        self.att_v = nn.Linear(2 * H, 1, bias=False)  # v
        self.gamma = nn.Parameter(torch.zeros(()))  # decay strength softplus(gamma)
        # Decoder: z -> (h0, c0); one learned input per step.
        self.dec_init = nn.Linear(2 * H, 2 * cfg.decoder_hidden)
        self.dec_step = nn.Embedding(max_len, cfg.decoder_hidden)
        self.decoder = nn.LSTM(cfg.decoder_hidden, cfg.decoder_hidden, batch_first=True)
        self.type_head = nn.Linear(cfg.decoder_hidden, n_types + 1)
        self.dt_head = nn.Linear(cfg.decoder_hidden, 1)

    @staticmethod
    def _check(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        missing = [f for f in FIELDS if f not in batch]
        if missing:
            raise KeyError(f"fdbc_encoder: batch lacks field(s) {missing}; it reads {list(FIELDS)}")
        types, dt = batch["types"], batch["dt"]
        if types.dim() != 2 or dt.shape != types.shape:
            raise ValueError(f"fdbc_encoder: types and dt must both be [B, L], got {tuple(types.shape)} and "
                             f"{tuple(dt.shape)}")
        return types, dt

    def encode(self, types: Tensor, dt: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Encode the first ``lengths`` [B] events of each row (the rest is padding)."""
        B, L = types.shape
        mask = torch.arange(L, device=types.device)[None] < lengths[:, None]  # [B, L]
        ldt = torch.log1p(dt.clamp_min(0.0)) * mask
        x = torch.cat([self.type_embedding(types * mask), torch.tanh(self.time_proj(ldt[..., None]))], -1)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=L)  # [B, L, 2H]
        if self.cfg.pooling == "mean":
            alpha = mask / lengths[:, None].to(h.dtype)
        else:
            a = self.att_v(torch.tanh(self.att_proj(h))).squeeze(-1)  # [B, L]
            if self.cfg.time_decay:
                dt_m = dt.clamp_min(0.0) * mask
                tau = dt_m.sum(1, keepdim=True) - torch.cumsum(dt_m, 1)  # time from click i to the last one
                a = a - F.softplus(self.gamma) * torch.log1p(tau)
            alpha = torch.softmax(a.masked_fill(~mask, float("-inf")), dim=1)  # padding gets exactly 0
        z = torch.bmm(alpha.unsqueeze(1), h).squeeze(1)  # [B, 2H]
        return {"z": z, "alpha": alpha, "h": h}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        types, dt = self._check(batch)
        return self.encode(types, dt, (types > 0).sum(1).clamp_min(1))

    def _decode(self, z: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """z [B, 2H] -> type logits [B, T, n_types + 1] and log1p-dt predictions [B, T]."""
        h0, c0 = torch.tanh(self.dec_init(z)).chunk(2, dim=-1)
        inp = self.dec_step.weight[:steps].unsqueeze(0).expand(z.shape[0], -1, -1)
        out, _ = self.decoder(inp, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        return self.type_head(out), self.dt_head(out).squeeze(-1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        types, dt = self._check(batch)
        lengths = (types > 0).sum(1).clamp_min(1)
        B, L = types.shape
        if L > self.max_len:
            raise ValueError(f"fdbc_encoder: L={L} exceeds max_len={self.max_len} decoder steps")
        ar = torch.arange(L, device=types.device)[None]
        if self.cfg.objective == "autoencoder":
            enc_len, steps = lengths, L
            tgt_idx = lengths[:, None] - 1 - ar  # newest first
            tgt_mask = ar < lengths[:, None]
        else:
            steps = min(self.cfg.next_k, L)
            enc_len = (lengths - steps).clamp_min(1)  # keep at least one event to encode
            tgt_idx = enc_len[:, None] + ar[:, :steps]
            tgt_mask = tgt_idx < lengths[:, None]
        z = self.encode(types, dt, enc_len)["z"]
        logits, dt_hat = self._decode(z, steps)
        idx = tgt_idx.clamp(0, L - 1)
        t_type = torch.gather(types, 1, idx)
        t_ldt = torch.log1p(torch.gather(dt, 1, idx).clamp_min(0.0))
        m = tgt_mask.to(logits.dtype)
        ce = F.cross_entropy(logits.transpose(1, 2), t_type, reduction="none")  # [B, T]
        mse = (dt_hat - t_ldt) ** 2
        return ((ce + self.cfg.dt_loss_weight * mse) * m).sum() / m.sum()


def _batches(lens: np.ndarray, batch_size: int, rng: np.random.Generator | None):
    """Index batches of similar lengths (less padding); shuffled within length ties and in order if ``rng``."""
    noise = rng.random(len(lens)) if rng is not None else np.zeros(len(lens))
    order = np.lexsort((noise, lens))
    chunks = [order[s:s + batch_size] for s in range(0, len(lens), batch_size)]
    for i in rng.permutation(len(chunks)) if rng is not None else range(len(chunks)):
        yield chunks[i]


def fit_encoder(model: FDBCEncoder, types: np.ndarray, dt: np.ndarray, epochs: int = 10, batch_size: int = 128,
                lr: float = 2e-3, seed: int = 0, clip: float = 5.0) -> list[float]:
    """Train ``model`` on its unsupervised objective with Adam; returns the mean loss of each epoch.

    ``types`` int [N, L] (right-padded with 0), ``dt`` float [N, L] seconds. Rows are trimmed to the
    longest real length of each batch."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit_encoder: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lens = (np.asarray(types) > 0).sum(1)
    history = []
    model.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in _batches(lens, batch_size, rng):
            w = max(1, int(lens[idx].max()))
            batch = {"types": torch.as_tensor(types[idx, :w], dtype=torch.long),
                     "dt": torch.as_tensor(dt[idx, :w], dtype=torch.float32)}
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / count)
    return history


@torch.no_grad()
def embed(model: FDBCEncoder, types: np.ndarray, dt: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Session embeddings z: float32 [N, 2H] (the model in eval mode, no gradients)."""
    model.eval()
    lens = (np.asarray(types) > 0).sum(1)
    out, rows = [], []
    for idx in _batches(lens, batch_size, None):
        w = max(1, int(lens[idx].max()))
        batch = {"types": torch.as_tensor(types[idx, :w], dtype=torch.long),
                 "dt": torch.as_tensor(dt[idx, :w], dtype=torch.float32)}
        out.append(model(batch)["z"].numpy())
        rows.append(idx)
    z = np.empty((len(lens), out[0].shape[1]), dtype=np.float32)
    z[np.concatenate(rows)] = np.concatenate(out)
    return z
