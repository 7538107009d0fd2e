"""A tiny random LLaVA-NeXT (2-layer CLIP, 2-layer Mistral, word-level tokenizer) saved to a folder, for tests.

Everything is built locally: the tokenizer with the ``tokenizers`` library, the model from a config with random
weights. The class-name rows of the output layer are scaled up so that greedy answers often name a class, which
makes the likelihood-versus-generation test meaningful.

Example:
    >>> folder = build_tiny_llava(tmp_path / "tiny")   # doctest: +SKIP
    >>> LlavaNextForConditionalGeneration.from_pretrained(folder)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from aclbuild.labeling.prompts import load_template
from aclbuild.registry import BASES

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "[INST]", "[/INST]"]
PUNCTUATION = list("[](),.:;?!\n") + ["-"]
IMAGE_SIZE = 28  # CLIP input side: 2 x 2 patches of 14 pixels
PATCH = 14


def _words() -> list[str]:
    import re

    text = " ".join(load_template(mode, None).source for mode in ("cl", "ord"))
    names = [n for base in BASES.values() for n in (*base.long_names, *base.short_names)]
    words = re.findall(r"\w+|[^\w\s]", " ".join([text, *names]).lower())
    numbers = [str(n) for n in range(1, 21)]
    return sorted(set(words) | set(numbers) | set(PUNCTUATION) - set(SPECIALS))


def build_tokenizer():
    """A word-level fast tokenizer whose vocabulary covers the prompts and every class name."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + _words())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)  # matched whole, before pre-tokenisation
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces, as a sentencepiece decode would
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        padding_side="left", extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    return fast


def build_tiny_llava(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random LlavaNextForConditionalGeneration and its processor into ``folder``; returns it."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
        MistralConfig,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    folder = Path(folder)
    tokenizer = build_tokenizer()
    vocab_size = len(tokenizer)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=PATCH, projection_dim=32,
    )  # fmt: skip
    text = MistralConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, sliding_window=None,
    )  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE * 2], [IMAGE_SIZE * 2, IMAGE_SIZE]],
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=4,
    )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        class_ids = sorted({tokenizer.convert_tokens_to_ids(w) for w in _class_words()})
        head[class_ids] *= 8.0  # greedy answers then often name a class (see module docstring)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )  # fmt: skip
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _class_words() -> list[str]:
    import re

    names = [n for base in BASES.values() for n in base.short_names]
    return sorted({w for n in names for w in re.findall(r"\w+", n.lower())} | {str(n) for n in range(1, 21)})


class PrefixPasses:
    """The images a likelihood labeler has sent through ``model`` with their prompt prefix, counted from outside by
    a forward pre-hook: calls that carry ``pixel_values`` and keep a key/value cache (``use_cache=True``), one image
    per row of ``input_ids``. The passes that continue a cache carry no pixels; a full pass (the chat-VLM labeler's
    check and fallback) keeps no cache.
    """

    def __init__(self, model) -> None:
        self.count = 0
        self._hook = model.register_forward_pre_hook(self._seen, with_kwargs=True)

    def _seen(self, module, args, kwargs) -> None:
        if kwargs.get("pixel_values") is not None and kwargs.get("use_cache"):
            self.count += kwargs["input_ids"].shape[0]

    def remove(self) -> None:
        """Stop counting."""
        self._hook.remove()
