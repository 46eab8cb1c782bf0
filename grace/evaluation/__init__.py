"""Evaluation: an encoder as an MTEB model, the offline WordNet tasks and their reader, and the
on-disk rationale cache.

Uses ``grace.model``; never the training code, the CLI, the app or ``analysis``.
"""
