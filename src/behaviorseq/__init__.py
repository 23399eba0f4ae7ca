"""behaviorseq: learning from user behavior sequences."""

__version__ = "0.1.0"
