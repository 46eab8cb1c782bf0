"""Training: the run configuration, data files, GRACE rewards, the trainer (GRACE, CL, SimCSE),
training jobs in their own process, and GRACE rewards for TRL's GRPOTrainer.

Uses ``grace.model``; never the evaluation, the CLI, the app or ``analysis``.
"""
