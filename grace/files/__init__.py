"""File plumbing every layer may use: the app's data folder, reading user texts, atomic writes."""
