"""Loaders: each reads one public data format into an ``EventTable``.

- ``read_recbole``: RecBole atomic files (``.inter`` + ``.item`` / ``.user``)
- ``read_seqtext``: "user item item ..." lines (S3-Rec Amazon / LastFM files) + ``item2attributes.json``
- ``read_movielens``: MovieLens 100K (``u.data``), 1M / 10M (``ratings.dat``), 20M+ (``ratings.csv``)
- ``read_taobao``: Taobao ``UserBehavior.csv``
- ``read_table``: any CSV / Parquet file or pandas / polars / Arrow table, with a column mapping
- ``read_easytpp_pickle`` / ``read_easytpp_hf``: event streams (time, type) in the Gatech/EasyTPP pickle
  layout or the EasyTPP Hugging-Face columns; these return ``EventSequences`` (continuous times), not an
  ``EventTable``

All raise ``DataFormatError`` (file, 1-based line counting the header, field) on a malformed row, or
with ``skip_bad_rows=True`` drop such rows, warn, and record them in ``table.report``.
"""

from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.data.loaders.movielens import read_movielens
from behaviorseq.data.loaders.recbole import read_recbole
from behaviorseq.data.loaders.seqtext import read_seqtext
from behaviorseq.data.loaders.tabular import read_table
from behaviorseq.data.loaders.taobao import read_taobao
from behaviorseq.data.loaders.tpp import read_easytpp_hf, read_easytpp_pickle

__all__ = [
    "DataFormatError",
    "read_easytpp_hf",
    "read_easytpp_pickle",
    "read_movielens",
    "read_recbole",
    "read_seqtext",
    "read_table",
    "read_taobao",
]
