"""Financial-risk models over payment / behaviour sequences (e.g. ``lbsf``: LBSF and, in ``flat_seq``,
its no-folding baselines)."""
