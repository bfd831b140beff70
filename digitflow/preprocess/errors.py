"""Typed errors for images that are not usable digits; `str(err)` is a short human reason."""

from __future__ import annotations


class PreprocessError(ValueError):
    """The input is not a usable digit image; `str(err)` is a short human reason."""


class EmptyFileError(PreprocessError):
    """The input has no bytes at all."""


class UnreadableImageError(PreprocessError):
    """Not an image, or a format or mode that is not supported."""


class TruncatedImageError(PreprocessError):
    """The image data ends before the image does."""


class ImageTooLargeError(PreprocessError):
    """More than MAX_PIXELS pixels: refused before decoding (decompression bombs)."""


class BlankImageError(PreprocessError):
    """The image decodes but shows no ink."""
