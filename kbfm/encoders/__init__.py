"""Encoder registries: text (gene and cell-type knowledge) and image (histology)."""

from ._text_backends import TextEncoder
from .image import DEFAULT_IMAGE_ENCODER, get_image_encoder, list_image_encoders
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
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "TEXT_ENCODERS",
    "TextEncoder",
    "TextEncoderSpec",
    "encode_texts",
    "get_image_encoder",
    "get_text_encoder",
    "list_image_encoders",
    "list_text_encoders",
    "register_text_encoder",
]
