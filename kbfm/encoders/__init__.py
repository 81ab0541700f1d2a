"""Encoder registries: text (gene and cell-type knowledge), later image and LLM."""

from ._text_backends import TextEncoder
from .text import (
    DEFAULT_TEXT_ENCODER,
    TEXT_ENCODERS,
    TextEncoderSpec,
    encode_texts,
    get_text_encoder,
    list_text_encoders,
    register_text_encoder,
)

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "TEXT_ENCODERS",
    "TextEncoder",
    "TextEncoderSpec",
    "encode_texts",
    "get_text_encoder",
    "list_text_encoders",
    "register_text_encoder",
]
