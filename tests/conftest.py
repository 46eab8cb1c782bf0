"""Shared fixtures: tiny random models built from a config (no weights fetched)."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tinychat") / "model", chat=True)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from grace.model.encoder import GraceEncoder

    return GraceEncoder.from_pretrained(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def default_encoder():
    """The embedded Gemma 3 270M (converted once into GRACE_CACHE)."""
    from grace.model.encoder import GraceEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GraceEncoder.from_pretrained("default", device="cpu")
