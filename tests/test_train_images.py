"""Images wider than 8 bits decode to the same 8-bit RGB in evaluation and in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from itra_bench.datasets.image_source import ImageFiles, ImageSource, load_rgb

#: 16-bit values and what 8 bits they scale to: round(v / 257).
VALUES16 = np.array([[0, 128, 129, 2570, 40000, 65535]], dtype=np.uint16)
EXPECTED8 = np.array([[0, 0, 1, 10, 156, 255]], dtype=np.uint8)


class _Files(ImageFiles):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.identity = "test"


class _InMemory(ImageSource):
    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.identity = "test"

    def __len__(self) -> int:
        return 1

    def open_image(self, index: int) -> Image.Image:
        return self.image.copy()


def _gray(img: Image.Image) -> np.ndarray:
    rgb = np.asarray(img)
    assert img.mode == "RGB" and (rgb == rgb[..., :1]).all()
    return rgb[..., 0]


@pytest.fixture
def png16(tmp_path) -> Path:
    path = tmp_path / "gray16.png"
    Image.fromarray(VALUES16).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # a real 16-bit grayscale PNG
    return path


def test_16bit_png_in_evaluation(png16):
    np.testing.assert_array_equal(_gray(load_rgb(_Files([png16]), 0)), EXPECTED8)


def test_16bit_png_in_training(png16, tmp_path):
    from itra_train.data import CsvImageText

    csv = tmp_path / "train.csv"
    csv.write_text(f"filepath\ttitle\n{png16.name}\ta gray ramp\n")
    np.testing.assert_array_equal(_gray(CsvImageText(csv).open_image(0)), EXPECTED8)


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I;16"])
def test_16bit_modes_scale_by_their_range(mode):
    order = ">" if mode == "I;16B" else "<"
    img = Image.frombytes(mode, (6, 1), VALUES16.astype(f"{order}u2").tobytes())
    np.testing.assert_array_equal(_gray(load_rgb(_InMemory(img), 0)), EXPECTED8)


def test_32bit_integer_image_is_clipped_to_16_bits_then_scaled():
    values = np.array([[-5, 0, 2570, 65535, 70000]], dtype=np.int32)
    img = Image.fromarray(values)
    assert img.mode == "I"
    np.testing.assert_array_equal(_gray(load_rgb(_InMemory(img), 0)), [[0, 0, 10, 255, 255]])


def test_8bit_images_are_unchanged():
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert np.asarray(load_rgb(_InMemory(rgb), 0)).tolist() == np.asarray(rgb).tolist()
    gray = Image.new("L", (2, 2), 77)
    assert (np.asarray(load_rgb(_InMemory(gray), 0)) == 77).all()
