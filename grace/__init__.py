"""GRACE Studio: rationale-conditioned embeddings from a generative LM (GRACE, arXiv 2510.04506).

The public API: ``load_encoder`` (the one way to load an encoder: from an ``EncodeSettings``, with
any field changed, e.g. ``load_encoder(adapter="grace-wordnet-sup")``), ``GraceEncoder`` and
``EncodeSettings`` to embed texts,
``GraceConfig`` and ``train`` to fine-tune. The packages below hold the parts:
``grace.model`` (the method's model side), ``grace.training``, ``grace.evaluation``,
``grace.files`` (plumbing), ``grace.cli`` and ``grace.ui`` (the interfaces).
"""

from .model.backbone import BackboneError, load_backbone
from .model.embedding import EncodeResult, embed_ids
from .model.encoder import GraceEncoder
from .model.loading import load_encoder
from .model.settings import EncodeSettings
from .training.config import GraceConfig
from .training.trainer import train

__all__ = ["BackboneError", "EncodeResult", "EncodeSettings", "GraceConfig", "GraceEncoder", "embed_ids",
           "load_backbone", "load_encoder", "train"]
__version__ = "0.2.0"
