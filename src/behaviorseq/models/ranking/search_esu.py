"""What SIM and ETA share after their searches: target attention (the ESU) over the K behaviours a search
selected, the main head, and with ``esu="twin"`` TWIN's auxiliary head over all L behaviours. The models differ
only in how they choose ``idx``."""

from __future__ import annotations

from torch import Tensor

from behaviorseq.nn.ctr_tower import target_representation
from behaviorseq.nn.target_attention import esu_scores, gather_rows, softmax_attention


def search_esu_heads(model, item: Tensor, category: Tensor, pos: Tensor, v: Tensor, idx: Tensor, mask: Tensor,
                     aux: bool) -> dict[str, Tensor]:
    """``model`` has ``embed``, ``tower``, ``aux_tower`` and a cfg with embedding_dim, use_position, esu.
    item / category / pos / mask [B, L], the target v [B, F], the search's idx [B, K] -> ``logit`` [B],
    ``topk_index`` / ``topk_weight`` [B, K] and, when ``aux`` and the model has the head, ``aux_logit`` [B]."""
    cfg = model.cfg
    e = model.embed(gather_rows(item, idx), gather_rows(category, idx), gather_rows(pos, idx))  # [B, K, F]
    s = esu_scores(v, e, cfg.embedding_dim, cfg.use_position, cfg.esu)  # ESU scores [B, K]
    h, w = softmax_attention(s, e, gather_rows(mask, idx))
    out = {"logit": model.tower(target_representation(v, h)), "topk_index": idx, "topk_weight": w}
    if aux and model.aux_tower is not None:  # TWIN's auxiliary head: full attention over all L
        e_all = model.embed(item, category, pos)
        h_all, _ = softmax_attention(esu_scores(v, e_all, cfg.embedding_dim, cfg.use_position), e_all, mask)
        out["aux_logit"] = model.aux_tower(target_representation(v, h_all))
    return out
