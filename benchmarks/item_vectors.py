"""Write a data set's item vectors from a semantic source to an .npz (raw item ids + vectors), for SRA-CL's
``semantic.source=vectors`` on a machine without the text encoder (e.g. a GPU box that cannot install it).

    python benchmarks/item_vectors.py --data ml-100k --out ml-100k_minilm.npz          # MiniLM text (default)
    python benchmarks/item_vectors.py --data beauty --source attributes --out beauty_attr.npz

Then: ``behaviorseq train --model sracl --data ml-100k model.semantic.source=vectors
model.semantic.vectors=ml-100k_minilm.npz``, which gives the same index as ``source=text``: the prefix vectors
are the normalised means of these item vectors in both cases.
"""

from __future__ import annotations

import argparse

from common import data_root

from behaviorseq.data.datasets import open_dataset
from behaviorseq.models.retrieval.semantic import SemanticConfig, make_source, save_item_vectors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a registered data set name or a path")
    ap.add_argument("--source", default="text", choices=["text", "attributes"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    store = open_dataset(args.data, root=data_root())  # unfiltered: a superset of any run's items
    src = make_source(SemanticConfig.from_dict({"source": args.source}), "cpu")
    path = save_item_vectors(store, src, args.out)
    print(f"{store.num_items} item vectors ({src.dim}-d, {args.source}) -> {path}")


if __name__ == "__main__":
    main()
