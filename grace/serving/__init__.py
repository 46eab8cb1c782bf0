"""Serving the model to many visitors: one engine that owns the model, batches rows across requests
and keeps a clock."""
