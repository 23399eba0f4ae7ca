import numpy as np, sys
from behaviorseq.data.datasets import open_dataset
from behaviorseq.models.retrieval.semantic import AttributeBagSource
from behaviorseq.models.retrieval import semantic_index as si
store = open_dataset(sys.argv[1], root="/work/shared/data")
store = store[0] if isinstance(store, tuple) else store
vec = AttributeBagSource(dim=128).item_vectors(store)
for ties in ("topk", "random"):
    nb = si.item_neighbours(vec, 10, ties=ties)
    deg = np.bincount(nb[1:].ravel(), minlength=len(nb))[1:]
    print(ties, "items", len(nb) - 1, "never a neighbour", int((deg == 0).sum()), "max in-degree", int(deg.max()),
          "mean neighbour id", round(float(nb[1:][nb[1:] > 0].mean()), 1))
