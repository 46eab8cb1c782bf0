"""Training: the run configuration (``config``), data files (``data``), the policy's rollouts
(``rollouts``), GRACE rewards (``rewards``), the policy-gradient update (``policy``), one optimizer
step across processes (``optim``), the trainer (GRACE, CL, SimCSE: ``trainer``), training jobs in
their own process (``jobs``), and GRACE rewards for TRL's GRPOTrainer (``trl_reward``).

Uses ``grace.model`` and ``grace.files``; never the evaluation, the CLI, the app or ``analysis``.
"""
