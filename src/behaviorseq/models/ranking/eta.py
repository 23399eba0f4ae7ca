"""ETA: "Efficient Long Sequential User Data Modeling for Click-Through Rate Prediction" (Chen et al.,
2021, arXiv 2108.04468; also "End-to-End User Behavior Retrieval in Click-Through Rate Prediction Model").

    search: SimHash the [item; cat] embeddings of the target and of every behaviour with m fixed random
        projections (sign bits); keep the K behaviours with the smallest Hamming distance to the target
        (computed as one matmul of +-1 codes: <c_t, c_j> = m - 2 * Hamming), non-differentiable
    ESU: target attention over the K, then the prediction tower (``search_esu``, shared with SIM).
The hashed embeddings are the trained ones (end-to-end: the search follows the embeddings as they learn).

Deviations, one line each:
- Ties in Hamming distance go to the more recent behaviour (a fraction < 1 added to the similarity).
- ETA's ESU is multi-head attention; this one is a single-head scaled dot product with a position field,
  as SIM's here: by default one sqrt(3d) and no auxiliary head; ``esu="twin"`` is TWIN's ESU exactly (split
  sqrt(2d) / sqrt(d) scaling, auxiliary head), so that only the search differs from TWIN / DARE.
- One output logit with BCE and DARE's tower and N(0, 0.01) init, for comparability.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from behaviorseq.models import register
from behaviorseq.models.ranking.search_esu import SearchESU, SearchESUConfig
from behaviorseq.nn.simhash import SimHash
from behaviorseq.nn.target_attention import topk_search


class ETAConfig(SearchESUConfig):
    """ETA's settings: those of every search-then-ESU model (``search_esu.SearchESUConfig``) and the hash's."""

    n_hashes: int = Field(64, gt=0)  # SimHash bits m
    hash_seed: int = 0  # seed of the fixed projections


def hamming_search(hasher: SimHash, query: Tensor, keys: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices [B, min(k, L)] of the keys [B, L, D] nearest to query [B, D] in Hamming distance of their
    SimHash bits; ties go to later (more recent) columns, padding last."""
    cq = hasher.bits(query).to(keys.dtype) * 2 - 1  # [B, m] in {-1, +1}
    ck = hasher.bits(keys).to(keys.dtype) * 2 - 1  # [B, L, m]
    agree = torch.bmm(ck, cq.unsqueeze(-1)).squeeze(-1)  # m - 2 * Hamming, exact small integers
    width = keys.shape[1]
    recency = torch.arange(width, device=keys.device, dtype=keys.dtype) / width  # in [0, 1): breaks ties only
    return topk_search(agree + recency, mask, k)


@register("eta")
class ETA(SearchESU):
    Config = ETAConfig
    name = "eta"

    def __init__(self, cfg: ETAConfig, n_items: int, n_categories: int):
        super().__init__(cfg, n_items, n_categories)
        self.hash = SimHash(2 * cfg.embedding_dim, cfg.n_hashes, 1, cfg.hash_seed)  # a fixed buffer: no init draws

    @torch.no_grad()  # the search is non-differentiable
    def search(self, batch: dict[str, Tensor], mask: Tensor) -> Tensor:
        """SimHash the [item; cat] embeddings (no position field) of the target and of every behaviour."""
        q = torch.cat([self.item_embedding(batch["target"]), self.category_embedding(batch["target_category"])], -1)
        keys = torch.cat([self.item_embedding(batch["item"]), self.category_embedding(batch["category"])], -1)
        return hamming_search(self.hash, q, keys, mask, self.cfg.top_k)
