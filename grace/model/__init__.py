"""The model side: backbone loading, prompts, rationale generation, pooling, the embedding
function, the encoder and its settings, the MiniLM baseline, the vLLM backend.

Imports nothing from ``grace.training``, ``grace.evaluation``, ``grace.cli``, ``grace.ui`` or
``analysis`` (tested).
"""
