"""Tiny random CLIP and SigLIP checkpoint folders built from configs: model, word-level tokenizer, image processor.

They load through the same ``from_pretrained`` calls as real checkpoints (e.g. openai/clip-vit-base-patch32,
google/siglip-base-patch16-224), so the VLPL and ``--labeler clip`` code paths are exercised offline in a second;
their scores are random, not meaningful.

Example:
    >>> folder = write_tiny_clip(tmp_path / "clip", ["0", "1", "2"])     # doctest: +SKIP
    >>> folder = write_tiny_siglip(tmp_path / "siglip", ["0", "1", "2"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel,
)

SPECIAL = ["[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"]


def write_tiny_clip(folder: str | Path, class_names: list[str], seed: int = 0) -> Path:
    """Write a random 2-layer CLIP with a vocabulary that covers "a photo of a {name}" for ``class_names``."""
    folder = Path(folder)
    vocab = _vocabulary(SPECIAL, class_names)
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


def _vocabulary(specials: list[str], class_names: list[str]) -> dict[str, int]:
    words = sorted({"a", "photo", "of", *(w for name in class_names for w in name.lower().split())})
    return {token: i for i, token in enumerate(specials + words)}


def write_tiny_siglip(folder: str | Path, class_names: list[str], seed: int = 0) -> Path:
    """Write a random 2-layer SigLIP (texts end with ``</s>`` and are padded to 16 tokens, as SigLIP's to 64)."""
    folder = Path(folder)
    vocab = _vocabulary(["<pad>", "<unk>", "</s>"], class_names)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="</s>", model_max_length=16
    )
    text = {
        "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": vocab["<pad>"],
        "eos_token_id": vocab["</s>"], "bos_token_id": None,
    }  # fmt: skip
    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 16, "patch_size": 8,
    }  # fmt: skip
    torch.manual_seed(seed)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder
