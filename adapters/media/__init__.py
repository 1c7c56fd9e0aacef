"""Reading the files users send: images (Pillow), text files, audio length (mutagen)."""

from adapters.media.reader import LocalMediaReader

__all__ = ["LocalMediaReader"]
