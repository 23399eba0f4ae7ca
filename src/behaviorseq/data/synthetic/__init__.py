"""Synthetic data sets with planted structure and their ground truth, reproducible from a seed."""

from behaviorseq.data.synthetic.hawkes import (
                                                       HawkesParams,
                                                       HawkesSample,
                                                       simulate_hawkes,
                                                       simulate_hawkes_stream,
)
from behaviorseq.data.synthetic.long_ctr import LongCTRConfig, LongCTRTruth, generate_long_ctr
from behaviorseq.data.synthetic.multi_interest import (
                                                       MultiInterestConfig,
                                                       MultiInterestTruth,
                                                       generate_multi_interest,
)
from behaviorseq.data.synthetic.near_ctr import NearCTRConfig, NearCTRTruth, generate_near_ctr
from behaviorseq.data.synthetic.seqrec import SeqRecConfig, SeqRecTruth, generate_seqrec

__all__ = ["HawkesParams", "HawkesSample", "simulate_hawkes", "simulate_hawkes_stream",
           "LongCTRConfig", "LongCTRTruth", "MultiInterestConfig", "MultiInterestTruth", "NearCTRConfig",
           "NearCTRTruth", "SeqRecConfig", "SeqRecTruth", "generate_long_ctr", "generate_multi_interest", "generate_near_ctr", "generate_seqrec"]
