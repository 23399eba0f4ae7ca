"""SRA-CL: Semantic Retrieval Augmented Contrastive Learning for Sequential Recommendation
(Cui et al., NeurIPS 2025, arXiv 2503.04162; official code ziqiangcui/SRA-CL @301353d, ``recommender_code/``).

A plug-in over a sequence encoder (SASRec by default; GRU4Rec as in the paper's Fig. 3), trained on
prefix samples (one per training event, its last ``max_len`` predecessors as input):

    L = L_Rec + alpha * L_CS + beta * L_IS                     (the paper's overall objective)

- L_Rec: softmax cross-entropy of the last position's state over all items (tied item table).
- L_CS, inter-user CL: the k = 10 semantic neighbours u' of prefix u are encoded, and the
  learnable sample synthesiser mixes them with GAT-style weights computed from the FROZEN semantic
  vectors s:   p = dropout_0.5( softmax_k( LeakyReLU_0.2( a^T [W s_u || W s_u'] ) ) ),
  h_u+ = sum_k p_k h_u'  (W [dim, d] and a [2d, 1] Xavier-uniform, gain 1.414); then NT-Xent (dot
  product, tau = 1) over the 2B vectors {h_u, h_u+}.
- L_IS, intra-user CL: two views of the prefix, in each every non-padding item replaced with
  probability 0.2 by a uniform draw from its top-10 semantic neighbours; the same NT-Xent.

Inference is the backbone alone. With alpha = beta = 0 the model is its backbone exactly: the backbone is
built first (same initialisation from the same seed) and no extra random number is drawn.
The semantic index comes from ``attach(store, train_view)`` (``run_experiment`` calls it; see
semantic.py for the sources and semantic_index.py for the retrieval and its leakage fixes).

Deviations from the paper / official code, one line each:
- The backbone is our SASRec (pre-LN on the query, ReLU FFN of width d, Xavier init), not RecBole's post-LN
  GELU Transformer (FFN 256, N(0, 0.02)), so that alpha = beta = 0 is exactly our SASRec baseline.
- Semantic vectors are offline stand-ins (attribute TF-IDF or MiniLM text), not DeepSeek-V3 summaries
  embedded by SimCSE-RoBERTa-large (1024-d): W's input width is ``semantic.dim``.
- The anchor h_u of L_CS reuses the L_Rec forward pass (the code encodes the prefix once more): 1 + 2 + k
  encoder passes per step, as the brief counts them, made as one batch of (3 + k) B rows (represent_rows).
- Neighbours exclude the user's own prefixes and any prefix whose window holds the target, and padding is
  never an item neighbour (the code keeps all three).
- Substitution is drawn on the device per batch (the code draws it in its Python data loader); an item
  whose neighbour slot is empty (fewer than item_k neighbours) is kept.
- Ties among item and prefix similarities (compared on a 2^-16 grid) are broken in a fixed random order
  (``item_ties``, ``prefix_ties``), not by index order or float rounding.
- A prefix left without any admissible neighbour (only possible on tiny data) is dropped from L_CS.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.models.retrieval.gru4rec import GRU4Rec
from behaviorseq.models.retrieval.sasrec import SASRec
from behaviorseq.models.retrieval.semantic import SemanticConfig, SemanticSource, make_source
from behaviorseq.models.retrieval.semantic_index import SemanticIndex, build_index
from behaviorseq.nn.contrastive import nt_xent
from behaviorseq.nn.dropout import dropout
from behaviorseq.nn.length_groups import encode_by_length
from behaviorseq.nn.losses import next_item_loss
from behaviorseq.utils import rank0_first

BACKBONES = {"sasrec": SASRec, "gru4rec": GRU4Rec}
WIDTH_KEY = {"sasrec": "hidden_size", "gru4rec": "embedding_size"}  # the backbone key that hidden_size sets
BUILD_WAIT = timedelta(days=7)  # DDP: how long the other ranks wait for rank 0 to build the semantic index
# code defaults for the backbone's other keys (main.py): 2 layers, 2 heads
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {"sasrec": {"num_blocks": 2, "num_heads": 2}, "gru4rec": {}}


class SRACLConfig(StrictConfig):
    backbone: Literal["sasrec", "gru4rec"] = "sasrec"  # paper: SASRec (GRU4Rec and DuoRec in Fig. 3)
    hidden_size: int = Field(64, gt=0)  # code: hidden_size 64 (GRU4Rec: its embedding_size)
    max_len: int = Field(20, gt=0)  # code: maxlen 20 (sliding-window prefixes)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # code: hidden and attention dropout 0.5
    backbone_args: dict[str, Any] = Field(default_factory=dict)  # the backbone's other config keys
    alpha: float = Field(0.1, ge=0.0)  # weight of L_CS (code --alpha 0.1)
    beta: float = Field(0.1, ge=0.0)  # weight of L_IS (code --beta 0.1)
    tau: float = Field(1.0, gt=0.0)  # NT-Xent temperature (code --temperature 1.0)
    k: int = Field(10, gt=0)  # neighbour prefixes (code --k_num 10)
    item_k: int = Field(10, gt=0)  # substitution candidates per item (code: k_num as well)
    item_ties: Literal["random", "topk"] = "random"  # equal item similarities: random picks ("topk": torch's order, used up to session 16)
    prefix_ties: Literal["random", "topk"] = "random"  # equal prefix similarities: the same ("topk": up to session 21)
    substitute_prob: float = Field(0.2, ge=0.0, le=1.0)  # code: mlm_probability 0.2, hard-coded
    synth_dropout: float = Field(0.5, ge=0.0, lt=1.0)  # code: F.dropout(attention, 0.5)
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)

    @field_validator("semantic", mode="before")
    @classmethod
    def _strict_semantic(cls, v: Any) -> Any:
        return SemanticConfig.from_dict(v) if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _resolve_backbone(self) -> SRACLConfig:
        reserved = {WIDTH_KEY[self.backbone], "max_len", "dropout", "loss"} & set(self.backbone_args)
        if reserved:
            raise ValueError(f"backbone_args may not set {sorted(reserved)}: use the top-level keys "
                             "(hidden_size, max_len, dropout; the loss is the paper's full-softmax CE)")
        if self.item_ties == "topk" and self.semantic.index_config("item_index").kind != "flat":
            raise ValueError("semantic.item_index ivf / hnsw applies the random tie rule; item_ties=topk is exact only")
        args = {**BACKBONE_DEFAULTS[self.backbone], **self.backbone_args}
        BACKBONES[self.backbone].Config.from_dict(self._full(args))  # validates them now, strictly
        object.__setattr__(self, "backbone_args", args)
        return self

    def _full(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**args, WIDTH_KEY[self.backbone]: self.hidden_size, "max_len": self.max_len,
                "dropout": self.dropout, "loss": "ce"}

    def backbone_config(self) -> dict[str, Any]:
        return self._full(self.backbone_args)


def _left_to_right(seq: Tensor) -> Tensor:
    """[M, W] left-padded -> right-padded (a rotation of each row by its padding)."""
    W = seq.shape[1]
    n = (seq > 0).sum(1, keepdim=True)
    return seq.gather(1, (torch.arange(W, device=seq.device) + W - n) % W)


def _right_to_left(seq: Tensor) -> Tensor:
    """[M, W] right-padded -> left-padded (the inverse rotation)."""
    W = seq.shape[1]
    n = (seq > 0).sum(1, keepdim=True)
    return seq.gather(1, (torch.arange(W, device=seq.device) + n) % W)


@register("sracl")
class SRACL(nn.Module):
    Config = SRACLConfig
    padding = "left"  # the backbone's: set per instance (GRU4Rec pads right)
    index_record: dict = {}  # the semantic index's cache key and content digest, once attached (train/run.py)
    fields: tuple[str, ...] = ()
    n_negatives = 0  # full softmax
    train_windows = "prefixes"  # code: every training prefix is a sample (batch["index"] = its row)
    cpu_buckets = 4  # length groups of represent_rows on a CPU (compute only: the states do not change)

    def __init__(self, cfg: SRACLConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        cls = BACKBONES[cfg.backbone]
        self.backbone = cls(cls.Config.from_dict(cfg.backbone_config()), n_items)  # first: same init as alone
        self.padding = self.backbone.padding
        d = cfg.hidden_size
        self.W = nn.Parameter(torch.empty(cfg.semantic.dim, d))  # the synthesiser's W (code: 1024 x 64)
        self.a = nn.Parameter(torch.empty(2 * d, 1))
        # from their own generator, seeded by the global seed: the global stream (dropout masks, ...) then
        # continues exactly as in the backbone trained alone
        g = torch.Generator().manual_seed(torch.initial_seed() + 1)
        nn.init.xavier_uniform_(self.W, gain=1.414, generator=g)
        nn.init.xavier_uniform_(self.a, gain=1.414, generator=g)
        # The semantic index: data, not weights. Not buffers either (DDP would broadcast them every step):
        # plain tensors that follow the model's .to() through _apply; set by attach / set_index.
        self.ix: dict[str, Tensor] = {}

    # ---- the semantic index -----------------------------------------------------------------------
    def attach(self, store, train_view, source: SemanticSource | None = None) -> None:
        """Build (or load from the disk cache) the semantic index of the training prefixes ``train_view``
        (``View.prefixes()``, whose row numbers the batches carry in ``batch["index"]``)."""
        if self.cfg.alpha == 0 and self.cfg.beta == 0:
            return  # plain backbone: no index needed
        sc = self.cfg.semantic
        device = ("cuda" if torch.cuda.is_available() else "cpu") if sc.device == "auto" else sc.device
        source = source or make_source(sc, device)
        # under DDP rank 0 builds and caches first (one search, one bill of LLM summaries), the others then read it
        self.set_index(rank0_first(lambda: build_index(
            store, train_view, source, self.cfg.max_len, self.cfg.k, self.cfg.item_k, sc.cache_dir, device,
            self.cfg.item_ties, sc.index_config(), sc.index_config("item_index"), self.cfg.prefix_ties), BUILD_WAIT))

    def set_index(self, index: SemanticIndex) -> None:
        if index.prefix_vectors.shape[1] != self.cfg.semantic.dim:
            raise ValueError(f"semantic vectors are {index.prefix_vectors.shape[1]}-d, the model expects "
                             f"semantic.dim = {self.cfg.semantic.dim}")
        if len(index.item_neighbours) != self.n_items + 1:
            raise ValueError(f"item neighbours cover {len(index.item_neighbours) - 1} items, the model {self.n_items}")
        arrays = {"events": index.events, "pstart": index.prefix_start, "pend": index.prefix_end,
                  "pnbr": index.prefix_neighbours, "inbr": index.item_neighbours}
        self.ix = {k: torch.as_tensor(v, dtype=torch.long, device=self.W.device) for k, v in arrays.items()}
        self.ix["pvec"] = torch.as_tensor(index.prefix_vectors, dtype=self.W.dtype, device=self.W.device)
        self.index_record = {"key": index.key, "digest": index.digest()}  # a resumed run checks the digest

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.ix = {k: fn(v) for k, v in self.ix.items()}  # .to(device) moves the index too
        return self

    def _prefix_rows(self, batch: dict[str, Tensor]) -> Tensor:
        if not self.ix:
            raise RuntimeError("SRA-CL needs its semantic index: model.attach(store, train_view) "
                               "(run_experiment does it) or model.set_index(index)")
        if "index" not in batch:
            raise KeyError("SRA-CL reads batch['index'], each sample's prefix row in the training view")
        idx = batch["index"]
        if (self.ix["events"][self.ix["pend"][idx]] != batch["target"]).any():
            raise ValueError("batch['index'] does not name the prefixes of the attached index "
                             "(SRA-CL trains on train.train_windows=prefixes)")
        return idx

    def _windows(self, rows: Tensor) -> Tensor:
        """[M] prefix rows -> [M, W] their encoded windows, in the backbone's padding."""
        seq = self._left_windows(rows)
        return seq if self.padding == "left" else _left_to_right(seq)

    def _left_windows(self, rows: Tensor) -> Tensor:
        """[M] prefix rows -> [M, W] their windows, left-padded (W = the longest)."""
        start, end = self.ix["pstart"][rows], self.ix["pend"][rows]
        width = max(1, int((end - start).max()))
        pos = end[:, None] - width + torch.arange(width, device=rows.device)
        return torch.where(pos >= start[:, None], self.ix["events"][pos.clamp(min=0)], 0)  # [M, W]

    # ---- encoder --------------------------------------------------------------------------------------
    def represent(self, item: Tensor) -> Tensor:
        """item [B, L] -> [B, d] the backbone's state after the latest item."""
        if self.padding == "left":
            return self.backbone.encode_last(item)  # [B, d]
        h = self.backbone.encode(item)  # [B, L, d]
        last = ((item > 0).sum(1) - 1).clamp(min=0)
        return h.gather(1, last.view(-1, 1, 1).expand(-1, 1, h.shape[-1])).squeeze(1)

    def represent_rows(self, seqs: list[Tensor]) -> list[Tensor]:
        """Several sets of left-padded windows [M_i, W_i] -> their states [M_i, d], encoded together: in one
        call on a GPU, in ``cpu_buckets`` length groups on a CPU (nn/length_groups.py)."""
        def last(s: Tensor) -> Tensor:
            return self.represent(s if self.padding == "left" else _left_to_right(s))
        return encode_by_length(last, seqs, self.cpu_buckets)

    @property
    def item_table(self) -> Tensor:
        return self.backbone.item_emb.weight  # [n_items + 1, d]

    # ---- the three losses --------------------------------------------------------------------------
    def synth_weights(self, rows: Tensor, nbr: Tensor) -> Tensor:
        """The synthesiser's weights before dropout: [B, k] softmax over the valid neighbours (-1 = none) of
        LeakyReLU(a^T [W s_u || W s_u']) = LeakyReLU(a_1^T W s_u + a_2^T W s_u')."""
        d = self.cfg.hidden_size
        s = self.ix["pvec"]  # [N, dim] frozen semantic prefix vectors
        zu = s[rows] @ self.W @ self.a[:d]  # [B, 1]
        zn = (s[nbr.clamp(min=0)] @ self.W) @ self.a[d:]  # [B, k, 1]
        e = F.leaky_relu(zu[:, None] + zn, 0.2).squeeze(-1)  # [B, k]
        e = e.masked_fill(nbr < 0, -torch.inf)
        return torch.where((nbr >= 0).any(1, keepdim=True), e, 0.0).softmax(1)  # no NaN on empty rows

    def inter_user_loss(self, h: Tensor, rows: Tensor, hn: Tensor | None = None) -> Tensor:
        """L_CS: NT-Xent between h_u [B, d] and its synthesised positive h_u+ (hn [B, k, d]: the neighbours'
        states, encoded here when not given)."""
        nbr = self.ix["pnbr"][rows]  # [B, k]
        if hn is None:
            hn = self.represent(self._windows(nbr.clamp(min=0).reshape(-1))).view(*nbr.shape, -1)
        p = dropout(self.synth_weights(rows, nbr), self.cfg.synth_dropout, self.training)  # [B, k]
        h_pos = (p.unsqueeze(-1) * hn).sum(1)  # [B, d] the synthesised positive, gradients into hn (code)
        keep = (nbr >= 0).any(1)
        if not keep.any():  # a batch without any admissible neighbour (tiny data): no L_CS term
            return h_pos.sum() * 0.0
        return nt_xent(h[keep], h_pos[keep], self.cfg.tau)

    def substitute(self, item: Tensor) -> Tensor:
        """Semantic substitution: each real item replaced with probability substitute_prob by a uniform draw from its
        semantic neighbours (never padding, never itself)."""
        nb = self.ix["inbr"][item]  # [B, L, item_k]
        slot = torch.randint(0, nb.shape[-1], (*item.shape, 1), device=item.device)
        pick = nb.gather(-1, slot).squeeze(-1)  # [B, L]
        hit = (torch.rand(item.shape, device=item.device) < self.cfg.substitute_prob) & (item > 0) & (pick > 0)
        return torch.where(hit, pick, item)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        item, target = batch["item"], batch["target"]
        if target.dim() != 1:
            raise ValueError("SRA-CL trains on single-target prefix samples (train.train_windows=prefixes), "
                             f"got targets of shape {tuple(target.shape)}")
        cfg = self.cfg
        if cfg.alpha == 0 and cfg.beta == 0:
            h = self.represent(item)  # [B, d]: exactly the backbone's forward
            return next_item_loss(h[:, None], target[:, None], self.item_table, "ce")
        rows = self._prefix_rows(batch)
        left = item if self.padding == "left" else _right_to_left(item)
        # The 1 + 2 + k encoder passes of the code (anchor, two views, k neighbours) as one represent_rows
        seqs = [left]
        if cfg.beta > 0:
            seqs += [self.substitute(left), self.substitute(left)]
        nbr = self.ix["pnbr"][rows]  # [B, k]
        if cfg.alpha > 0:
            seqs.append(self._left_windows(nbr.clamp(min=0).reshape(-1)))
        hs = self.represent_rows(seqs)
        h = hs[0]
        loss = next_item_loss(h[:, None], target[:, None], self.item_table, "ce")  # L_Rec, full softmax
        if cfg.alpha > 0:
            loss = loss + cfg.alpha * self.inter_user_loss(h, rows, hs[-1].view(*nbr.shape, -1))
        if cfg.beta > 0:  # L_IS: NT-Xent between the two substituted views
            loss = loss + cfg.beta * nt_xent(hs[1], hs[2], cfg.tau)
        return loss

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return self.backbone.score(batch)  # [B, n_items + 1], the backbone alone (paper: inference)
