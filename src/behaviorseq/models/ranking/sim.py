"""SIM (hard search): "Search-based User Interest Modeling with Lifelong Sequential Behavior Data for
Click-Through Rate Prediction" (Pi et al., CIKM 2020), hard-search variant, with DARE's "TWIN (hard)"
selection rule (brief 1.1) so that it is the category-match counterpart of TWIN / DARE.

    GSU (hard search): keep the behaviours whose category equals the target's, the most recent K of them;
        with fewer than K, fill up with the most recent other behaviours (DARE's rule)
    ESU: target attention over the K, then the prediction tower (``search_esu``, shared with ETA).

Deviations, one line each:
- SIM's ESU is multi-head attention with time-interval embeddings; this one is a single-head scaled dot
  product with a position field: by default one sqrt(3d) over [item; cat; pos] and no auxiliary head (the
  README's SIM rows). ``esu="twin"`` is TWIN's soft-mode ESU after the hard search (semantic part over
  sqrt(2d), position part over sqrt(d), the auxiliary head over all L). DARE's official "TWIN (hard)" differs:
  its auxiliary head attends over the searched K only and its semantic part is over all 3d fields / sqrt(3d).
- The paper's search is an inverted index per user and category; the selection here is one top-K over
  a category-match key, the same result with static shapes.
- One output logit with BCE and DARE's tower and N(0, 0.01) init, for comparability.
"""

from __future__ import annotations

import torch
from torch import Tensor

from behaviorseq.models import register
from behaviorseq.models.ranking.search_esu import SearchESU, SearchESUConfig
from behaviorseq.nn.target_attention import topk_search


class SIMConfig(SearchESUConfig):
    """SIM's settings: those of every search-then-ESU model (``search_esu.SearchESUConfig``)."""


def hard_search(category: Tensor, target_category: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices [B, min(k, L)] of the most recent same-category behaviours, then the most recent others.

    The key ranks every same-category behaviour above every other one and, within each group, later
    columns (more recent, left padding) first; padding ranks last (see ``topk_search``)."""
    width = category.shape[1]
    col = torch.arange(width, device=category.device, dtype=torch.float32)
    same = (category == target_category.unsqueeze(1)).float()
    return topk_search(same * width + col, mask, k)


@register("sim")
class SIM(SearchESU):
    Config = SIMConfig
    name = "sim"

    def search(self, batch: dict[str, Tensor], mask: Tensor) -> Tensor:
        return hard_search(batch["category"], batch["target_category"], mask, self.cfg.top_k)
