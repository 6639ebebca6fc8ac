"""Robust aggregation of votes and ratings: recommenders under fake accounts, reputation, strategyproofness.

- :mod:`~byzance.voting.data`: MovieLens-100K (from the installed recbole
  package) and synthetic ratings with a known true ranking.
- :mod:`~byzance.voting.sparse`: robust per-item aggregation of sparse votes.
- :mod:`~byzance.voting.scores`: item scores and rankings; ranking metrics.
- :mod:`~byzance.voting.attacks`: fake accounts (push, bury, hyperactive).
- :mod:`~byzance.voting.factorization`: matrix factorization trained on
  robustly aggregated per-user gradients.
- :mod:`~byzance.voting.strategy`: the skewed geometric median's best
  responses and strategic gain (El Mhamdi et al., AISTATS 2023).
- :mod:`~byzance.voting.experiment`: the config-driven runs of ``byzance votes``
  (config in :mod:`~byzance.voting.votes_config`, on the runs layer's config
  system; the poisoning/reputation and strategy runs in ``votes_poisoning`` and
  ``votes_strategy``).
"""
