"""scikit-learn's bundled handwritten digits as small RGB images: the embedded demo data.

The split is fixed (stratified, 70 % train / 30 % held out, random_state=0) so that the demo
trainer and the demo evaluation never share an image.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from itra_bench.datasets.image_source import ImageSource

# numpy and PIL load with the data: the demo task plugin imports this module for every
# command, `itra-bench --help` and `list` included.
if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SIZE = 32
SPLITS = ("train", "test")


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train, test = train_test_split(idx, test_size=0.3, random_state=0, stratify=digits.target)
    return digits.images, digits.target, {"train": np.sort(train), "test": np.sort(test)}


class DigitsSplit(ImageSource):
    """One split of the digits, rendered white-on-black at 32x32."""

    def __init__(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"digits split must be one of {SPLITS}, not {split!r}")
        images, targets, splits = _load()
        self.split = split
        self._rows = splits[split]
        self._images = images
        self.targets: list[int] = [int(t) for t in targets[self._rows]]
        self.classes = CLASSNAMES
        self.identity = f"sklearn-digits:{split}:v1"

    def __len__(self) -> int:
        return len(self._rows)

    def open_image(self, index: int) -> Image.Image:
        import numpy as np
        from PIL import Image

        pixels = (self._images[self._rows[index]] * (255.0 / 16.0)).astype(np.uint8)
        img = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return img.convert("RGB")

    def describe(self, index: int) -> str:
        return f"sklearn digits #{int(self._rows[index])}"


#: Phrasings of a digit's label used as its captions (retrieval and the demo trainer).
CAPTION_TEMPLATES = (
    "a handwritten digit {name}.",
    "the number {numeral}, written by hand.",
    "a small grayscale picture of a {name}.",
)


def captions_for(label: int) -> list[str]:
    """All caption phrasings of digit ``label``."""
    return [t.format(name=CLASSNAMES[label], numeral=label) for t in CAPTION_TEMPLATES]


class DigitsCaptions(DigitsSplit):
    """A digits split with every phrasing of its label as captions, for retrieval."""

    def __init__(self, split: str) -> None:
        super().__init__(split)
        self.captions: list[str] = []
        self.text_to_image: list[int] = []
        for i, label in enumerate(self.targets):
            for caption in captions_for(label):
                self.captions.append(caption)
                self.text_to_image.append(i)
