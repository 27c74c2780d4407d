"""The contract of an indexed image collection, and decoding with clear errors."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


class ImageSource:
    """Indexed images that a reader exposes to the encoder.

    ``identity`` must change whenever the images could, and differ between splits: with the
    model fingerprint and the transform it keys the feature cache.
    """

    identity: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def open_image(self, index: int) -> Image.Image:
        """Open image ``index`` (may raise on unreadable data)."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from (a path, or a zip member), for error messages."""
        return f"image #{index}"


def load_rgb(source: ImageSource, index: int) -> Image.Image:
    """Image ``index`` fully decoded as RGB; decoding errors propagate."""
    with source.open_image(index) as img:
        img.load()
        return img.convert("RGB")


class ImageFiles(ImageSource):
    """An image source backed by a list of files (``self.paths``), set by the subclass."""

    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)

    def open_image(self, index: int) -> Image.Image:
        return Image.open(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])
