"""The prompts of SRA-CL's LLM summary step (Cui et al., NeurIPS 2025, arXiv 2503.04162, Sec. 3.1 and its appendix).

The paper asks DeepSeek-V3 ("deepseek-chat", temperature 0, top_p 0.001) to summarise every item and every
training prefix, then embeds the summaries. The client and its disk cache are ``behaviorseq.llm``; SRA-CL's config
reaches them through ``semantic.llm`` (``semantic.make_source``).

The item prompt lists up to 5 sequences of 2-11 items that end with the item (the official code's numbers; the
paper says up to 10), drawn by ``item_sequences`` from the targets of training prefixes with the items before them,
so no validation or test event enters a prompt (the brief's leakage pitfall: the code also drew on prefixes ending
at validation items). Under DDP, SRA-CL's rank 0 builds the index (and asks the LLM) before the other ranks.

Deviations, one line each:
- Items are named by their text (the item fields joined; ``semantic.fields`` picks them), in sequences too; the
  code uses titles there.
- A completion is embedded as returned (the item prompt's JSON included); the paper does not say it parses it.
"""

from __future__ import annotations

import hashlib

import numpy as np

USER_PROMPT = ("The user interacted with these items in chronological order: {items}. Summarise the user's "
               "specific preference in no more than 100 words.")  # paper, Appendix (user summaries)
ITEM_PROMPT = ("Item: {item}.{sequences} Give a JSON object with an 'item summary' (at most 80 words) and a "
               "'potential user analysis' (at most 50 words).")  # paper, Appendix (item summaries)
SEQUENCES = " Users came to it through these sequences, each in order and ending with it: {lists}."
ITEM_SEQUENCES = (5, 11, 0)  # per item: at most 5 sequences of at most 11 items (official code), sampling seed
PROMPTS_DIGEST = hashlib.sha256(repr((USER_PROMPT, ITEM_PROMPT, SEQUENCES, ITEM_SEQUENCES)).encode()).hexdigest()[:12]
OFFLINE_HINT = ", or drop semantic.llm to embed the raw texts (the paper's w/o-LLM ablation)"


def item_sequences(events: np.ndarray, start: np.ndarray, end: np.ndarray, n_items: int,
                   per_item: int = ITEM_SEQUENCES[0], max_len: int = ITEM_SEQUENCES[1],
                   seed: int = ITEM_SEQUENCES[2]) -> list[list[list[int]]]:
    """For each item row 0..n_items, up to ``per_item`` sequences of item ids that end with it: a training prefix's
    target ``events[end[j]]`` and at most ``max_len - 1`` of the prefix's items before it (at least one). The
    prefixes are drawn at random (``seed``) among those whose target is the item; row 0 and items that are no
    training target get none."""
    j = np.flatnonzero(end - start >= 1)
    target = events[end[j]]
    order = np.lexsort((np.random.default_rng(seed).random(len(j)), target))
    j, target = j[order], target[order]
    rank = np.arange(len(j)) - np.searchsorted(target, target, side="left")  # place within the item's draws
    out: list[list[list[int]]] = [[] for _ in range(n_items + 1)]
    for jj, t in zip(j[rank < per_item].tolist(), target[rank < per_item].tolist()):
        out[t].append(events[max(start[jj], end[jj] - (max_len - 1)):end[jj] + 1].tolist())
    return out


def item_prompt(text: str, sequences: list[list[int]] | None, names: list[str]) -> str:
    """The item prompt of ``text``; ``sequences`` (item ids) named through ``names`` (row i: item i's text)."""
    lists = "; ".join("[" + ", ".join(names[i] for i in seq) + "]" for seq in sequences or [])
    return ITEM_PROMPT.format(item=text, sequences=SEQUENCES.format(lists=lists) if lists else "")
