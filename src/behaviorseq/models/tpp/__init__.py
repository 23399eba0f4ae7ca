"""Temporal point process models, one file each; registered as ``nhp``, ``thp``, ``attnhp``, ``hawkes_exp``.

Contract (beyond ``behaviorseq.models``): built as ``cls(cfg, num_types)``; ``fields`` names the batch
fields read (``time``, ``dtime``, ``type``, ``mask``; see ``behaviorseq.nn.tpp``);
``encode(batch) -> state`` (a dict holding ``mask``) runs the history once; ``intensity(state, dt)``
[B, L, S] -> [B, L, S, K] is lambda_k(t_i + dt) from events 0..i; ``loss(batch)`` is minus the
log-likelihood per event with the integral term stated by the model's config. Optional:
``next_event_intensity(state)`` -> [B, L-1, K], lambda_k(t_{i+1}) at each next event of the batch the state
was encoded from, which ``nn.tpp.loglik`` then uses instead of ``intensity(state, gap)`` (NHP's CT-LSTM has
these left limits as a by-product of its recurrence).
"""
