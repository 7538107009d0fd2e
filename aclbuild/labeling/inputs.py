"""LLaVA-NeXT model inputs for a batch of same-size images: what transformers' processor returns, computed batched.

transformers' ``LlavaNextImageProcessorPil`` handles one image and one crop at a time in Python (about 0.35 ms per
32x32 image, as long as the tiny test model's forward pass over it). :class:`BatchInputs` does the same steps for a
whole batch of equal-size images: the two PIL bicubic resizes per image (the only step that must stay per image),
then padding, cutting into crops, rescaling and normalising as array operations, the last two through a 256-entry
table per channel that holds exactly the float32 values transformers computes. The prompt's image placeholder is
expanded to the number of image tokens that the processor gives for that image size, then tokenised as the
processor does. The equality with transformers' processor is tested (``tests/test_llava_inputs.py``).

A processor this class does not know, or options it does not reproduce (images of different sizes in one batch,
crops that need another resize), go through transformers' processor unchanged.

Example:
    >>> inputs = BatchInputs(processor)                                    # doctest: +SKIP
    >>> inputs(images, ["[INST] <image>\\nWhich ..."] * len(images))["pixel_values"].shape   # doctest: +SKIP
    torch.Size([32, 3, 3, 28, 28])
"""

from __future__ import annotations

import numpy as np

# The image processor whose steps this module reproduces (transformers' reference PIL implementation).
SUPPORTED_IMAGE_PROCESSORS = ("LlavaNextImageProcessorPil",)


class BatchInputs:
    """Callable ``(images, texts) -> BatchFeature`` equal to ``processor(images=..., text=..., padding=True)``."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._image_tokens: dict[tuple[int, int], str] = {}  # (height, width) -> the placeholder's expansion
        self._shared: dict[tuple[str, int, int], dict] = {}  # the last text given alone (the prompt prefix)
        self._lengths: dict[tuple[str, int, int], int] = {}
        self.plan = _CropPlan.of(processor)

    def __call__(self, images: list[np.ndarray], texts: list[str]):
        """Model inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ``image_sizes``) as torch tensors."""
        shapes = {np.shape(im) for im in images}
        if self.plan is None or len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
            return self._reference(images, texts)
        height, width, _ = next(iter(shapes))
        crops = self.plan.crops(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        if crops is None:
            return self._reference(images, texts)
        from transformers import BatchFeature

        expansion = self._expansion(images[0], height, width)
        if len(set(texts)) == 1:  # the shared prompt prefix: tokenised once per run
            key = (texts[0], height, width)
            if key not in self._shared:
                self._shared = {key: self.tokenizer([texts[0].replace(self.processor.image_token, expansion)])}
            encoded = {k: np.repeat(np.asarray(v), len(texts), axis=0) for k, v in self._shared[key].items()}
        else:
            encoded = self.tokenizer([t.replace(self.processor.image_token, expansion) for t in texts], padding=True)
        sizes = np.tile(np.array([[height, width]], dtype=np.int64), (len(images), 1))
        data = {**encoded, "pixel_values": crops, "image_sizes": sizes}
        return BatchFeature(data=data, tensor_type="pt")

    def length(self, image: np.ndarray, text: str) -> int:
        """How many tokens ``text`` takes with ``image`` in its placeholder (memoised by text and image size)."""
        key = (text, *np.shape(image)[:2])
        if key not in self._lengths:
            self._lengths[key] = int(self([image], [text])["input_ids"].shape[1])
        return self._lengths[key]

    def _reference(self, images: list[np.ndarray], texts: list[str]):
        return self.processor(images=[to_pil(im) for im in images], text=texts, padding=True, return_tensors="pt")

    def _expansion(self, image: np.ndarray, height: int, width: int) -> str:
        """The image tokens the processor puts in place of the placeholder for an image of this size."""
        if (height, width) not in self._image_tokens:
            placeholder = self.processor.image_token
            ids = self.processor(images=[to_pil(image)], text=[placeholder], return_tensors="np")["input_ids"][0]
            count = int((ids == self.processor.image_token_id).sum())
            self._image_tokens[(height, width)] = placeholder * count
        return self._image_tokens[(height, width)]


class _CropPlan:
    """The steps of LlavaNextImageProcessorPil for images of one size, as batched array operations."""

    def __init__(self, image_processor, side: int, base_size: tuple[int, int]) -> None:
        self.ip, self.side, self.base_size = image_processor, side, base_size
        self.table = _value_table(image_processor)

    @classmethod
    def of(cls, processor) -> _CropPlan | None:
        """The plan for ``processor``, or None when it is not one whose steps this module reproduces exactly."""
        ip = getattr(processor, "image_processor", None)
        if type(ip).__name__ not in SUPPORTED_IMAGE_PROCESSORS or not hasattr(processor, "image_token"):
            return None
        size, crop = _size_dict(ip.size), _size_dict(ip.crop_size)
        side = crop.height if crop and crop.height else (size.height or size.shortest_edge)
        base_size = (size.height, size.width) if size.height and size.width else (size.shortest_edge,) * 2
        # Every crop is then side x side; the processor's per-crop resize and centre crop must leave it unchanged.
        resize_keeps = not ip.do_resize or (size.shortest_edge or size.height) == side and not size.longest_edge
        resize_keeps = resize_keeps and (not size.height or size.height == size.width)
        crop_keeps = not ip.do_center_crop or (crop.height == side and crop.width == side)
        scaled = ip.do_rescale and ip.do_normalize  # as every LLaVA-NeXT checkpoint: float32 pixels
        if not (resize_keeps and crop_keeps and scaled and base_size == (side, side) and ip.do_resize):
            return None
        return cls(ip, side, base_size)

    def crops(self, images: np.ndarray):
        """float32 tensor [N, 1 + crops, 3, side, side] for uint8 images [N, H, W, 3]; None if the grid is uneven."""
        import torch
        from PIL import Image
        from transformers.image_processing_utils import select_best_resolution

        n, height, width, _ = images.shape
        grid_h, grid_w = select_best_resolution((height, width), self.ip.image_grid_pinpoints)
        if grid_h % self.side or grid_w % self.side:
            return None
        new_h, new_w = _fit(height, width, grid_h, grid_w)
        top, left = (grid_h - new_h) // 2, (grid_w - new_w) // 2
        rows, cols = grid_h // self.side, grid_w // self.side
        out = np.empty((n, 1 + rows * cols, self.side, self.side, 3), dtype=np.uint8)
        grid = np.zeros((grid_h, grid_w, 3), dtype=np.uint8)
        for k in range(n):  # the resizes are PIL's, image by image, exactly as the processor does them
            pil = Image.fromarray(images[k])
            out[k, 0] = np.asarray(pil.resize(self.base_size[::-1], resample=self.ip.resample))
            grid[top : top + new_h, left : left + new_w] = np.asarray(pil.resize((new_w, new_h), self.ip.resample))
            tiles = grid.reshape(rows, self.side, cols, self.side, 3).swapaxes(1, 2)
            out[k, 1:] = tiles.reshape(rows * cols, self.side, self.side, 3)
        values = np.empty((n, 1 + rows * cols, 3, self.side, self.side), dtype=np.float32)
        for channel in range(3):
            np.take(self.table[channel], out[..., channel], out=values[:, :, channel])
        return torch.from_numpy(values)


def _size_dict(size):
    """transformers' SizeDict of a size given as one or as a plain dict (set on the processor after it was made)."""
    from transformers.image_utils import SizeDict

    return SizeDict(**size) if isinstance(size, dict) else size


def _fit(height: int, width: int, grid_h: int, grid_w: int) -> tuple[int, int]:
    """The aspect-preserving size inside the grid (transformers' get_patch_output_size)."""
    import math

    scale_w, scale_h = grid_w / width, grid_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), grid_h), grid_w
    return grid_h, min(math.ceil(width * scale_h), grid_w)


def _value_table(ip) -> np.ndarray:
    """float32 [3, 256]: each byte value after the processor's rescale (float64, then float32) and normalisation."""
    scaled = (np.arange(256, dtype=np.float64) * ip.rescale_factor).astype(np.float32)
    mean, std = (np.broadcast_to(np.array(v, dtype=np.float32).reshape(-1), (3,)) for v in (ip.image_mean, ip.image_std))
    return ((scaled[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)


def to_pil(image: np.ndarray):
    """An RGB PIL image of a uint8 [H, W, 3] (or [H, W]) array."""
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
