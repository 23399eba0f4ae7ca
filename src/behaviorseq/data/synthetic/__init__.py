"""Synthetic data sets with planted structure and their ground truth, reproducible from a seed."""

from behaviorseq.data.synthetic.seqrec import SeqRecConfig, SeqRecTruth, generate_seqrec

__all__ = ["SeqRecConfig", "SeqRecTruth", "generate_seqrec"]
