"""BatchInputs gives exactly what transformers' LLaVA-NeXT processor gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aclbuild.labeling.inputs import BatchInputs, to_pil


def _processor(side: int, pinpoints: list[list[int]]):
    from tiny_llava import PATCH, build_tokenizer
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
    )
    return LlavaNextProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip


TINY = (28, [[28, 56], [56, 28]])  # the test model's
MISTRAL_7B = (336, [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])  # llava-v1.6-mistral-7b's


@pytest.mark.parametrize(("side", "pinpoints"), [TINY, MISTRAL_7B], ids=["tiny", "mistral-7b"])
@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (30, 50), (50, 17)])
def test_equal_to_the_transformers_processor(side, pinpoints, shape):
    processor = _processor(side, pinpoints)
    batch = BatchInputs(processor)
    assert batch.plan is not None  # the batched path, not the fallback
    images = list(np.random.default_rng(sum(shape)).integers(0, 256, (3, *shape, 3), dtype=np.uint8))
    for texts in (
        ["[INST] <image>\nwhich of cat, dog [/INST]", "[INST] <image>\nx [/INST]", "[INST] <image>\ncat [/INST]"],
        ["[INST] <image>\nthe shared prefix"] * 3,  # tokenised once, then repeated
    ):
        expected = processor(images=[to_pil(im) for im in images], text=texts, padding=True, return_tensors="pt")
        got = batch(images, texts)
        assert sorted(got.keys()) == sorted(expected.keys())
        for key in expected:
            assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key
    assert batch.length(images[0], texts[0]) == expected["input_ids"].shape[1]


def test_mixed_sizes_and_unknown_processors_use_transformers():
    processor = _processor(*TINY)
    images = [np.zeros((32, 32, 3), np.uint8), np.full((40, 24, 3), 200, np.uint8)]
    expected = processor(images=[to_pil(im) for im in images], text=["<image> a"] * 2, padding=True, return_tensors="pt")
    got = BatchInputs(processor)(images, ["<image> a"] * 2)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    processor.image_processor.crop_size = {"height": 14, "width": 14}  # crops that would need another resize
    assert BatchInputs(processor).plan is None
