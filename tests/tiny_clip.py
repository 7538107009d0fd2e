"""A tiny random CLIP checkpoint folder built from a config: model, word-level tokenizer, image processor.

It loads through the same ``from_pretrained`` calls as a real checkpoint (e.g. openai/clip-vit-base-patch32), so
the VLPL code path is exercised offline in a second; its scores are random, not meaningful.

Example:
    >>> folder = write_tiny_clip(tmp_path / "clip", ["0", "1", "2"])   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

SPECIAL = ["[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"]


def write_tiny_clip(folder: str | Path, class_names: list[str], seed: int = 0) -> Path:
    """Write a random 2-layer CLIP with a vocabulary that covers "a photo of a {name}" for ``class_names``."""
    folder = Path(folder)
    words = sorted({"a", "photo", "of", *(w for name in class_names for w in name.lower().split())})
    vocab = {token: i for i, token in enumerate(SPECIAL + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]), ("<|endoftext|>", vocab["<|endoftext|>"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="<|startoftext|>",
        eos_token="<|endoftext|>", model_max_length=16,
    )  # fmt: skip
    text = {
        "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": vocab["<|endoftext|>"],
        "bos_token_id": vocab["<|startoftext|>"], "pad_token_id": vocab["[PAD]"],
    }  # fmt: skip
    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 16, "patch_size": 8,
    }  # fmt: skip
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder
