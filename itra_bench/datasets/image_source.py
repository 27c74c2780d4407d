"""The contract of an indexed image collection, and decoding with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# numpy and PIL load when an image is opened: the task plugins that import this module are
# loaded by every command, `itra-bench --help` and `list` included.
if TYPE_CHECKING:
    from PIL import Image

#: Integer modes of more than 8 bits per pixel (16-bit grayscale PNG and TIFF, 32-bit "I").
#: PIL's own conversion to RGB clips their values at 255, so nearly every pixel turns white.
WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


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

    def prepare(self) -> None:
        """Make the images readable before any is read: called once, in the main process,
        before images are encoded, and only when some must be (not when every feature is
        cached). A source of remote data fetches it here; the default does nothing."""


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit RGB image, the one conversion evaluation and training share.

    16-bit integer images are scaled to 8 bits over their full range (``round(v / 257)``, so
    65535 becomes 255); a 32-bit ``I`` image is first clipped to 0..65535, the range of the
    16-bit files it comes from. Every other mode converts as PIL converts it.
    """
    img.load()
    if img.mode not in WIDE_INTEGER_MODES:
        return img.convert("RGB")
    import numpy as np
    from PIL import Image

    values = np.asarray(img).astype(np.int64)
    if img.mode == "I":
        values = np.clip(values, 0, 65535)
    gray = ((values + 128) // 257).astype(np.uint8)  # round(v / 257) in integers
    return Image.fromarray(gray).convert("RGB")  # a 2-D uint8 array is mode L


def load_rgb(source: ImageSource, index: int) -> Image.Image:
    """Image ``index`` fully decoded as 8-bit RGB (:func:`to_rgb`); decoding errors
    propagate."""
    with source.open_image(index) as img:
        return to_rgb(img)


class ImageFiles(ImageSource):
    """An image source backed by a list of files (``self.paths``), set by the subclass."""

    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)

    def open_image(self, index: int) -> Image.Image:
        from PIL import Image

        return Image.open(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])
