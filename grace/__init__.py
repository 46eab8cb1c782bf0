"""GRACE Studio: rationale-conditioned embeddings from a generative LM (GRACE, arXiv 2510.04506)."""

from .backbone import BackboneError, load_backbone
from .encoder import EncodeResult, GraceEncoder, embed_ids
from .models import load_encoder

__all__ = ["BackboneError", "EncodeResult", "GraceEncoder", "embed_ids", "load_backbone", "load_encoder"]
__version__ = "0.1.0"
