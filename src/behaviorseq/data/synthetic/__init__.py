"""Synthetic data sets with planted structure and their ground truth, reproducible from a seed."""

from behaviorseq.data.synthetic.multi_interest import (
                                                       MultiInterestConfig,
                                                       MultiInterestTruth,
                                                       generate_multi_interest,
)
from behaviorseq.data.synthetic.seqrec import SeqRecConfig, SeqRecTruth, generate_seqrec

__all__ = ["MultiInterestConfig", "MultiInterestTruth", "SeqRecConfig", "SeqRecTruth", "generate_multi_interest",
           "generate_seqrec"]
