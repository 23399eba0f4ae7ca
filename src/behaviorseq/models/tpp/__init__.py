"""Temporal point process models, one file each; registered as ``nhp``, ``thp``, ``attnhp``, ``hawkes_exp``.

Contract (beyond ``behaviorseq.models``): built as ``cls(cfg, num_types)``; ``fields`` names the batch
fields read (``time``, ``dtime``, ``type``, ``mask``; see ``behaviorseq.nn.tpp``);
``encode(batch) -> state`` (a dict holding ``mask``) runs the history once; ``intensity(state, dt)``
[B, L, S] -> [B, L, S, K] is lambda_k(t_i + dt) from events 0..i; ``loss(batch)`` is minus the
log-likelihood per event with the integral term stated by the model's config.
"""
