"""How fast `aclbuild generate` labels, on CPU with the tiny test model, and on a GPU with LLaVA-NeXT-7B's shape.

cpu: the tiny random LLaVA-NeXT of the tests (tests/tiny_llava.py) labels N CIFAR-sized (32x32) images through the
     real runner (DataLoader workers preparing, candidates, prompts, parsing, part files, merge) with both scorings.
     Prints the goal's figure: the main process's own work per batch outside the forward passes (its thread's CPU
     time: receiving the prepared batch, replies, rows, part files, progress; goal at most 5 ms at batch 32, where
     a 7B model's forward passes take about 0.8 s). Also reported, not a goal: images per second and the share of
     wall time outside the forward passes, over the whole run and from the first forward pass to the last (without
     the fixed start and finish: the workers forked, the first batch prepared, the merge); with --scoring generate,
     also outside transformers' generate() (whose own decoding loop runs between the forward passes).
gpu: llava-v1.6-mistral-7b's architecture (CLIP ViT-L/14-336 + Mistral-7B, 32,064-token vocabulary, the 336x672
     grid) built from its configuration with random weights (nothing is downloaded), on 512 CIFAR-sized images.
     In one run: the reference loop (batch 8, fp16, one full generation per query, 3 rounds) against the project's
     best mode (likelihood scoring, bf16, one prefix pass per image for all rounds). Prints queries per second for
     both, the ratio, and the share of the H100's 790 TFLOP/s bf16 peak reached at about 19 TFLOP per query
     (vlm-labeling.md). Random weights never say end-of-answer, so the reference generates --answer-tokens tokens
     per query (default 4: a class word and end-of-answer, as the real model answers), not 30.

    python benchmarks/bench_generate.py cpu [--images 4096] [--batch-size 32] [--workers N]
    python benchmarks/bench_generate.py gpu [--images 512] [--batch-size 8]
    python benchmarks/bench_generate.py gpu --smoke --images 16     # the gpu code on CPU, with the tiny model
    python benchmarks/bench_generate.py gpu --labeler vlm           # the same for --labeler vlm

gpu --labeler vlm: Idefics3-8B-Llama3's architecture (SigLIP so400m at 364 pixels + Llama-3-8B, 169 image tokens,
     image splitting off: a 32x32 image is one tile) built from its configuration with random weights, through the
     generic chat-VLM labeler; the same two modes, without the FLOP share (counted for LLaVA-NeXT only).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_llava and fakes: the test suite's model and archive builders

PEAK_FLOPS = 790e12  # H100 SXM dense bf16, as vlm-labeling.md uses
FLOPS_PER_QUERY = 19e12  # vlm-labeling.md: LLaVA-NeXT-7B on a 32x32 image, one full query


class ForwardTimer:
    """Seconds spent inside ``model.forward`` (every call, decoding steps included), when the first call began and
    the last one ended, and seconds inside ``model.generate`` (forward passes and transformers' decoding loop)."""

    def __init__(self, model) -> None:
        import torch

        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        self.first_start = self.last_end = None
        self.generating = 0.0
        self._sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)
        generate = model.generate

        def timed_generate(*args, **kwargs):
            start = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                self._sync()
                self.generating += time.perf_counter() - start

        model.generate = timed_generate

    def _before(self, *_):
        self._sync()
        self._start = time.perf_counter()
        self.first_start = self.first_start or self._start

    def _after(self, *_):
        self._sync()
        self.last_end = time.perf_counter()
        self.seconds += self.last_end - self._start
        self.calls += 1

    def steady_share_outside(self) -> float:
        """The share of the time between the first forward pass and the last one spent outside them: the run without
        its fixed start (first batch prepared in place, worker forked) and finish (last records, merge)."""
        return 1 - self.seconds / (self.last_end - self.first_start)


def cifar_archive(folder: Path, images: int) -> Path:
    from fakes import make_cifar10_archive

    return make_cifar10_archive(folder, n_per_batch=-(-images // 5))


def bench_cpu(args) -> None:
    from tiny_llava import build_tiny_llava

    from aclbuild.labeling.llava import LlavaBackend
    from aclbuild.labeling.runner import GenerateSettings, read_log, run_generate

    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    try:
        model = build_tiny_llava(work / "tiny")
        archive = cifar_archive(work, args.images)
        print(f"CPU, tiny random LLaVA-NeXT, {args.images} CIFAR-sized images x 3 rounds, batch {args.batch_size}")
        print(f"(best of {args.repeat} runs each, interleaved: other jobs may share this machine)")
        best: dict[str, dict] = {}
        for run in range(args.repeat):
            for scoring in ("likelihood", "generate"):
                backend = LlavaBackend.from_pretrained(str(model), scoring=scoring, batch_size=args.batch_size,
                                                       max_new_tokens=4)  # fmt: skip
                timer = ForwardTimer(backend.model)
                settings = GenerateSettings(base="cifar10", model=str(model), scoring=scoring, limit=args.images,
                                            max_retries=0, max_new_tokens=4)  # fmt: skip
                out = run_generate(settings, archive, work / f"{scoring}{run}", batch_size=args.batch_size,
                                   backend=backend, num_workers=args.workers)  # fmt: skip
                log = read_log(out)
                if scoring not in best or log["seconds"] < best[scoring]["seconds"]:
                    best[scoring] = {
                        "seconds": log["seconds"], "forward": timer.seconds, "calls": timer.calls,
                        "steady": timer.steady_share_outside(), "generating": timer.generating,
                        "main_ms": log["main_process_ms_per_batch"], "workers": log["workers"],
                    }  # fmt: skip
        for scoring, b in best.items():
            outside = 1 - b["forward"] / b["seconds"]
            print(f"  {scoring:<10} {args.images / b['seconds']:8.1f} images/s  "
                  f"{3 * args.images / b['seconds']:8.1f} queries/s  wall {b['seconds']:6.2f} s  forward passes "
                  f"{b['forward']:6.2f} s ({b['calls']} calls)  outside the model {100 * outside:5.1f}% (whole run), "
                  f"{100 * b['steady']:5.1f}% (from the first forward pass to the last)")  # fmt: skip
            print(f"  {'':<10} main process's own work per batch, outside the forward passes: {b['main_ms']:.2f} ms "
                  f"CPU (goal: at most 5 ms at batch 32); {b['workers']} DataLoader worker(s)")  # fmt: skip
            if b["generating"]:
                print(f"  {'':<10} outside transformers' generate() calls: "
                      f"{100 * (1 - b['generating'] / b['seconds']):5.1f}% (whole run)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def random_on_gpu(model_class, config, dtype, tokenizer):
    """``model_class`` built from ``config`` with seeded random weights on the GPU, in eval mode, generating with
    ``tokenizer``'s pad and end tokens."""
    import torch

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = model_class._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def mistral_7b_llava(dtype):
    """llava-v1.6-mistral-7b-hf's architecture from its published configuration, random weights, on the GPU."""
    from tiny_llava import build_tokenizer
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
        MistralConfig,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = build_tokenizer()
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
            patch_size=14, projection_dim=768, hidden_act="quick_gelu",
        ),
        text_config=MistralConfig(
            vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, max_position_embeddings=32768, rope_theta=1e6, sliding_window=None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576,
    )  # fmt: skip
    model = random_on_gpu(LlavaNextForConditionalGeneration, config, dtype, tokenizer)
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=pinpoints,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        ),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    return processor, model


def idefics3_8b(dtype):
    """Idefics3-8B-Llama3's architecture from its published configuration, random weights, on the GPU."""
    from tiny_vlms import IDEFICS3_TEMPLATE, build_word_tokenizer
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    specials = ["<|im_start|>", "<end_of_utterance>", "<pad>", "<fake_token_around_image>", "<image>", "<global-img>"]
    tokenizer = build_word_tokenizer(specials, "<|im_start|>", "<end_of_utterance>", "<pad>", add_bos=False)
    side, patch, scale = 364, 14, 2  # 26 x 26 patches, pixel-shuffled by 2: 169 image tokens
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=side,
            patch_size=patch,
        ),
        text_config=LlamaConfig(
            vocab_size=128259, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, max_position_embeddings=8192, rope_theta=5e5, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        scale_factor=scale, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    model = random_on_gpu(Idefics3ForConditionalGeneration, config, dtype, tokenizer)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": side}, max_image_size={"longest_edge": side}, do_image_splitting=False,
        ),
        tokenizer=tokenizer, image_seq_len=(side // patch) ** 2 // scale**2, chat_template=IDEFICS3_TEMPLATE,
    )  # fmt: skip
    return processor, model


def tiny_vlm_loaded():
    """(processor, model) of the tiny test Idefics3, for --smoke --labeler vlm."""
    from tiny_vlms import build_tiny_vlm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = build_tiny_vlm("idefics3", Path(tempfile.mkdtemp(prefix="bench_generate_smoke_")) / "tiny")
    return AutoProcessor.from_pretrained(folder), AutoModelForImageTextToText.from_pretrained(folder).eval()


def tiny_llava_loaded():
    """(processor, model) of the tiny test model, for --smoke."""
    from tiny_llava import build_tiny_llava
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    folder = build_tiny_llava(Path(tempfile.mkdtemp(prefix="bench_generate_smoke_")) / "tiny")
    return AutoProcessor.from_pretrained(folder), LlavaNextForConditionalGeneration.from_pretrained(folder).eval()


def gpu_queries(images: int, rounds: int = 3):
    from aclbuild.labeling.backend import Query
    from aclbuild.labeling.candidates import uniform_candidates
    from aclbuild.labeling.prompts import load_template
    from aclbuild.registry import get_base

    names, template = get_base("cifar10").short_names, load_template("cl", None)
    pixels = np.random.default_rng(0).integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    by_round = []
    for r in range(rounds):
        batch = []
        for i in range(images):
            shown = [names[c] for c in uniform_candidates(1126, i, r, 10)]
            prefix, suffix = template.split_prompt(shown)
            batch.append(Query(i, r, 0, pixels[i], shown, shown, template.prompt(shown), prefix, suffix))
        by_round.append(batch)
    return by_round


def bench_gpu(args) -> None:
    import torch

    from aclbuild.labeling.backend import ask
    from aclbuild.labeling.llava import LlavaBackend
    from aclbuild.labeling.runner import GenerateSettings, read_log, run_generate
    from aclbuild.labeling.vlm import VlmBackend

    vlm = args.labeler == "vlm"

    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("bench_generate.py gpu needs a CUDA GPU (--smoke runs this code on CPU with the tiny model)")
    by_round = gpu_queries(args.images)
    work = Path(tempfile.mkdtemp(prefix="bench_generate_gpu_"))
    archive = cifar_archive(work, args.images)
    queries = len(by_round) * args.images
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke run)"
    model = "Idefics3-8B-Llama3" if vlm else "llava-v1.6-mistral-7b"
    model = f"the tiny test model (--labeler {args.labeler})" if args.smoke else f"{model} architecture, random weights"
    print(f"{name}: {model}, {args.images} 32x32 images x 3 rounds")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    results = {}
    for label, scoring, dtype, batch in (
        ("reference loop (fp16, batch 8, generate)", "generate", "fp16", 8),
        (f"aclbuild best (bf16, likelihood, batch {args.batch_size})", "likelihood", "bf16", args.batch_size),
    ):
        if args.smoke:  # the same code path on CPU, so that this script is checked without a GPU
            loaded = tiny_vlm_loaded() if vlm else tiny_llava_loaded()  # in fp32
        else:
            torch_dtype = getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[dtype])
            loaded = idefics3_8b(torch_dtype) if vlm else mistral_7b_llava(torch_dtype)
        backend = (VlmBackend if vlm else LlavaBackend)(
            *loaded, scoring=scoring, batch_size=batch, max_new_tokens=args.answer_tokens, model_id=f"{model} (random)"
        )  # fmt: skip
        ask(backend, by_round[0][: min(8, args.images)])  # warm-up: kernels, allocator
        sync()
        start = time.perf_counter()
        if scoring == "generate":
            for batch_queries in by_round:  # one full generation per query, round after round, as the reference
                ask(backend, batch_queries)
        else:  # through the runner, as `aclbuild generate` does it (DataLoader workers prepare the batches)
            settings = GenerateSettings(base="cifar10", labeler=args.labeler, scoring="likelihood", limit=args.images,
                                        max_retries=0)  # fmt: skip
            run_generate(settings, archive, work / "best", batch_size=batch, backend=backend)
        sync()
        seconds = time.perf_counter() - start
        if scoring == "likelihood":  # the labeling loop alone, not reading the archive or writing the outputs
            seconds = read_log(work / "best")["seconds"]
        results[label] = queries / seconds
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        print(f"  {label:<45} {queries / seconds:8.2f} queries/s  ({seconds:.1f} s, peak {peak:.1f} GiB)")
        del backend, loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    shutil.rmtree(work, ignore_errors=True)
    ref, best = results.values()
    print(f"  speed-up {best / ref:.2f}x (goal: at least 4x)")
    for label, qps in results.items() if not (args.smoke or vlm) else ():
        print(f"  {label:<45} {100 * qps * FLOPS_PER_QUERY / PEAK_FLOPS:5.1f}% of 790 TFLOP/s "
              "(counting 19 TFLOP per query, the reference's full cost)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("where", choices=("cpu", "gpu"))
    parser.add_argument("--images", type=int, default=None, help="images (cpu: 4096, gpu: 512)")
    parser.add_argument("--batch-size", type=int, default=None, help="cpu: 32, gpu best mode: 8")
    parser.add_argument("--repeat", type=int, default=3, help="cpu: runs per scoring; the fastest is reported")
    parser.add_argument("--smoke", action="store_true", help="gpu: run its code on CPU with the tiny model")
    parser.add_argument("--answer-tokens", type=int, default=4, help="gpu reference: tokens generated per query")
    parser.add_argument("--labeler", choices=("llava", "vlm"), default="llava", help="gpu: the labeler measured")
    parser.add_argument("--workers", type=int, default=None, help="cpu: DataLoader workers [default: generate's]")
    args = parser.parse_args()
    args.images = args.images or (4096 if args.where == "cpu" else 512)
    args.batch_size = args.batch_size or (32 if args.where == "cpu" else 8)
    bench_cpu(args) if args.where == "cpu" else bench_gpu(args)


if __name__ == "__main__":
    main()
