"""The batch PNG encoder: lossless with ISA-L's deflate and with the plain zlib fallback."""

from __future__ import annotations

import numpy as np
import pytest

from aclbuild import png


@pytest.mark.parametrize("deflate", ["default", "zlib"])
@pytest.mark.parametrize("shape", [(700, 5, 9, 3), (3, 32, 32, 3), (1, 1, 1, 3)])
def test_round_trip(monkeypatch, deflate, shape):
    if deflate == "zlib":
        monkeypatch.setattr(png, "_deflate", png._zlib_deflate)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    images[0] = 255  # extremes exercise the mod-256 wrap of the Average filter
    encoded = png.encode_png_batch(images)
    assert len(encoded) == len(images)
    for image, data in zip(images, encoded):
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert np.array_equal(png.decode_image(data), image)


def test_rejects_non_rgb():
    with pytest.raises(ValueError):
        png.encode_png_batch(np.zeros((2, 4, 4), np.uint8))
