"""File plumbing every layer may use: the app's data folder, reading user texts, atomic writes,
and a training run's folder (``run_folder``: the one owner of its file names)."""
