"""Tiny random chat VLMs of several families (Idefics3 / SmolVLM, Gemma 3, ...) saved to folders, for tests.

Each is built locally from a config with random weights: a word-level tokenizer made with the ``tokenizers``
library (the family's special tokens added), the family's image processor at a small size, and a chat template in
the family's format. As in :mod:`tests.tiny_llava`, the output rows of class-name words are scaled up so that
greedy answers often name a class.

Example:
    >>> folder = build_tiny_vlm("idefics3", tmp_path / "tiny")   # doctest: +SKIP
    >>> AutoModelForImageTextToText.from_pretrained(folder)      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from tiny_llava import PUNCTUATION, _class_words, _words

CHAT_WORDS = ["user", "assistant", "model", "system", ":"]

IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
QWEN2VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FAMILIES = ("idefics3", "gemma3", "qwen2vl", "llava_onevision")
SEEDS = {"llava_onevision": 1}
# the families whose processors carry a video processor, which needs torchvision (see docs/labeling.md)
NEEDS_TORCHVISION = ("qwen2vl", "llava_onevision")


def build_word_tokenizer(specials: list[str], bos: str | None, eos: str, pad: str, add_bos: bool, **extra):
    """A word-level fast tokenizer over the prompts' and class names' words, with the family's ``specials``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(_words()) | set(CHAT_WORDS) | set(PUNCTUATION) - set(specials))
    vocab = {token: i for i, token in enumerate(["<unk>", *specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.add_special_tokens(specials)
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    if add_bos and bos is not None:  # Gemma's tokenizer adds <bos> itself, as its chat template also does
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token=bos, eos_token=eos, pad_token=pad, padding_side="left",
        extra_special_tokens=extra or None,
    )  # fmt: skip


def build_tiny_vlm(family: str, folder: str | Path, seed: int | None = None) -> Path:
    """Save a tiny random model of ``family`` (one of :data:`FAMILIES`) and its processor into ``folder``; the
    default seed is one whose greedy answers vary in both modes (seed 0 makes LLaVA-OneVision answer "2" always)."""
    import torch

    builders = {"idefics3": _idefics3, "gemma3": _gemma3, "qwen2vl": _qwen2vl, "llava_onevision": _onevision}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    torch.manual_seed(SEEDS.get(family, 0) if seed is None else seed)
    model, processor = builders[family]()
    tokenizer = processor.tokenizer
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[sorted({tokenizer.convert_tokens_to_ids(w) for w in _class_words()})] *= 8.0
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    folder = Path(folder)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    specials = ["<|im_start|>", "<end_of_utterance>", "<pad>", "<fake_token_around_image>", "<image>", "<global-img>"]
    tokenizer = build_word_tokenizer(specials, "<|im_start|>", "<end_of_utterance>", "<pad>", add_bos=False)
    side, patch, scale = 32, 8, 2  # 4 x 4 patches, pixel-shuffled by 2: 4 image tokens
    vision = Idefics3VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=side,
        patch_size=patch,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = Idefics3Config(
        vision_config=vision, text_config=text, scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": side}, max_image_size={"longest_edge": side}, do_image_splitting=False,
    )  # fmt: skip
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=(side // patch) ** 2 // scale**2,
        chat_template=IDEFICS3_TEMPLATE,
    )  # fmt: skip
    return Idefics3ForConditionalGeneration(config), processor


def _gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers import SiglipVisionConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    specials = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"]  # fmt: skip
    tokenizer = build_word_tokenizer(
        specials, "<bos>", "<end_of_turn>", "<pad>", add_bos=True, boi_token="<start_of_image>",
        eoi_token="<end_of_image>", image_token="<image_soft_token>",
    )  # fmt: skip
    side, patch, tokens = 28, 14, 4
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=side,
        patch_size=patch,
    )  # fmt: skip
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=tokens, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
    )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    image_processor = Gemma3ImageProcessorPil(size={"height": side, "width": side})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE, image_seq_length=tokens
    )
    return Gemma3ForConditionalGeneration(config), processor


def _qwen2vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]  # fmt: skip
    tokenizer = build_word_tokenizer(specials, None, "<|im_end|>", "<|endoftext|>", add_bos=False)
    ids = tokenizer.convert_tokens_to_ids
    vision = Qwen2VLVisionConfig(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14)
    text = Qwen2VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                              "mrope_section": [2, 3, 3]},
    )  # fmt: skip
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    pixels = 56 * 56  # 4 x 4 patches of 14, merged by 2: 4 image tokens
    image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels)
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2VL_TEMPLATE,
    )  # fmt: skip
    return Qwen2VLForConditionalGeneration(config), processor


def _onevision():
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor
    from transformers import Qwen2Config, SiglipVisionConfig
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tokenizer = build_word_tokenizer(specials, None, "<|im_end|>", "<|endoftext|>", add_bos=False)
    side, patch = 28, 14
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=side,
        patch_size=patch,
    )  # fmt: skip
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    pinpoints = [[side, side], [side, side * 2], [side * 2, side]]
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": side, "width": side},
                                                      image_grid_pinpoints=pinpoints)  # fmt: skip
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(side // patch) ** 2, vision_feature_select_strategy="full", chat_template=ONEVISION_TEMPLATE,
    )  # fmt: skip
    return LlavaOnevisionForConditionalGeneration(config), processor
