"""The options of `aclbuild generate` and `aclbuild benchmark`, the verbs with the most; cli.py registers them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from aclbuild.cli_common import console, user_errors
from aclbuild.errors import InputError
from aclbuild.extras import needs_extra, require_extra

__all__ = ["benchmark_command", "generate_command"]


def benchmark_command(
    ctx: typer.Context,
    datasets: Annotated[list[str], typer.Argument(
        metavar="DATASET", help="repository folders or Hub ids (ORG/NAME)", show_default=False
    )],  # fmt: skip
    output_dir: Annotated[Path, typer.Option(
        "--output-dir", "-o", metavar="DIR", help="folder for runs/, results.json, results.md"
    )],  # fmt: skip
    strategy: Annotated[list[str], typer.Option(
        "--strategy", "-s", metavar="NAME", help="strategy name, or all; repeat for several: -s FWD -s SCL-NL; "
        "--task spml: bce, iun, an, EM, EM_APL, EM_PL (VLPL's spelling; hyphens accepted)"
    )],  # fmt: skip
    task: Annotated[str, typer.Option(
        metavar="NAME", help="cl: complementary-label learning; spml: VLPL's single-positive multi-label learning "
        "on an SPML repository (mAP)")] = "cl",  # fmt: skip
    strategy_type: Annotated[Optional[list[str]], typer.Option(
        "--type", metavar="TYPE", help="libcll spelling: --strategy URE --type NN is URE-NN [default: none]"
    )] = None,  # fmt: skip
    model: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="resnet34, resnet18, densenet, mlp or linear; --task spml: resnet50 or clip-linear (a "
        "linear head on frozen CLIP features) [default: resnet34; spml: resnet50]")] = None,  # fmt: skip
    epochs: Annotated[Optional[int], typer.Option(
        metavar="N", help="training epochs per run [default: 300; spml: VLPL's 10]")] = None,  # fmt: skip
    lr: Annotated[Optional[list[float]], typer.Option(
        metavar="LR", help="learning rate (Adam, no weight decay); repeat for a grid, the best chosen by --lr-select: "
        "--lr 1e-3 --lr 1e-4 [default: 1e-4; spml: VLPL's 1e-5, CUB 1e-4]"
    )] = None,  # fmt: skip
    batch_size: Annotated[Optional[int], typer.Option(
        metavar="N", help="rows per batch [default: 256; spml: VLPL's 8]")] = None,  # fmt: skip
    seed: Annotated[Optional[list[int]], typer.Option(
        metavar="N", help="training seed; repeat for several: --seed 1 --seed 2 [default: 1207, 9213, 17 and 33; "
        "spml: 0]"
    )] = None,  # fmt: skip
    valid_type: Annotated[str, typer.Option(metavar="NAME", help="accuracy, ure or scel")] = "accuracy",
    eval_every: Annotated[int, typer.Option(metavar="N", help="validate every N epochs")] = 10,
    num_cl: Annotated[int, typer.Option(
        metavar="N", help="use the first N CLs of each image; 0: a random number of uniform synthetic CLs per image "
        "(libcll)")] = 3,  # fmt: skip
    clean_noisy: Annotated[float, typer.Option(
        metavar="FRACTION", help="drop this fraction of the pairs whose CL is the true label")] = 0.0,  # fmt: skip
    clip_model: Annotated[Optional[str], typer.Option(
        metavar="PATH", help="CLIP checkpoint id or folder, for AN, EM, EM-PL; spml: for EM_PL's pseudo-labels and "
        "clip-linear's features [default: none; spml: openai/clip-vit-large-patch14-336]")] = None,  # fmt: skip
    batch_by: Annotated[str, typer.Option(
        metavar="NAME", help="image: --batch-size images with all their CLs, one view each (libcll); pair: (image, "
        "CL) pairs")] = "image",  # fmt: skip
    precision: Annotated[str, typer.Option(metavar="NAME", help="fp32 (libcll) or bf16 (autocast, GPU only)")] = "fp32",
    hidden_dim: Annotated[int, typer.Option(
        metavar="N", help="MLP hidden width (libcll trains with 256; its argparse says 500)")] = 256,  # fmt: skip
    init: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="conv init: kaiming (fan_out, as libcll) or pytorch (default init); spml: a .safetensors "
        "or torch file of ImageNet ResNet-50 weights (torchvision's names) [default: kaiming; spml: random init]")
    ] = None,  # fmt: skip
    valid_rule: Annotated[str, typer.Option(
        metavar="NAME", help="T of the ure/scel scores: empirical for all, or strategy (each strategy's own, as "
        "libcll)")] = "empirical",  # fmt: skip
    lr_select: Annotated[str, typer.Option(
        metavar="NAME", help="validation (best mean validation score) or reference (libcll: best TEST accuracy at "
        "--lr-seed)")] = "validation",  # fmt: skip
    lr_seed: Annotated[int, typer.Option(metavar="N", help="the seed --lr-select reference tries the grid at")] = 1126,
    vlpl_alpha: Annotated[Optional[float], typer.Option(
        metavar="ALPHA", help="entropy weight on unknown labels of AN, EM and EM-PL [default: 0.1; spml: VLPL's 0.2 "
        "VOC, 0.1 COCO and NUS-WIDE, 0.01 CUB]")] = None,  # fmt: skip
    vlpl_beta: Annotated[Optional[float], typer.Option(
        metavar="BETA", help="spml: weight of a positive pseudo-label (EM_PL) [default: 0.7]")] = None,  # fmt: skip
    vlpl_threshold: Annotated[Optional[float], typer.Option(
        metavar="S", help="spml: CLIP score s above which a class is a positive pseudo-label [default: 0.3]"
    )] = None,  # fmt: skip
    vlpl_partial: Annotated[Optional[float], typer.Option(
        metavar="FRACTION", help="spml: share of each image's lowest-scoring classes made negative pseudo-labels "
        "[default: 0]")] = None,  # fmt: skip
    vlpl_temperature: Annotated[Optional[float], typer.Option(
        metavar="T", help="spml: temperature of CLIP's softmax over classes [default: 0.01]")] = None,  # fmt: skip
    vlpl_defaults: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="spml: whose VLPL settings to start from: voc2012-spml, coco2014-spml, nuswide-spml or "
        "cub-spml [default: the repository's own]")] = None,  # fmt: skip
    image_size: Annotated[int, typer.Option(
        metavar="N", help="spml: resnet50's input side in pixels (VLPL: 448)")] = 448,  # fmt: skip
    workers: Annotated[int, typer.Option(
        metavar="N", help="spml: DataLoader processes decoding images (resnet50, the CLIP pass)")] = 4,  # fmt: skip
) -> None:
    """Train complementary-label (or, with --task spml, single-positive multi-label) learners; write results.json
    and a mean +- std table.

    Example: `aclbuild benchmark out/aclcifar10 -s FWD -s SCL-NL --model resnet18 --seed 1 --seed 2 -o bench`;
    `aclbuild benchmark out/voc2012-spml --task spml -s EM_PL --model clip-linear -o bench`
    """
    with user_errors():
        with needs_extra("bench"):
            from aclbuild.bench.benchmark import REFERENCE_SEEDS, BenchmarkSpec, run_benchmark

        given = {name for name in ctx.params if _given(ctx, name)}
        if task == "spml":
            _refuse_options(given, CL_ONLY_OPTIONS, "cl")
            from aclbuild.bench.spml_benchmark import PAPER_CLIP, PAPER_SEEDS, SpmlBenchmarkSpec, run_spml_benchmark

            overrides = {"alpha": vlpl_alpha, "beta_pos": vlpl_beta, "threshold": vlpl_threshold,
                         "partial": vlpl_partial, "temperature": vlpl_temperature}  # fmt: skip
            spec = SpmlBenchmarkSpec(
                datasets, strategy, model=model or "resnet50", clip_model=clip_model or PAPER_CLIP, epochs=epochs,
                lrs=lr, batch_size=batch_size, seeds=seed or list(PAPER_SEEDS), image_size=image_size, init=init,
                workers=workers, precision=precision, overrides=overrides, defaults_of=vlpl_defaults,
            )  # fmt: skip
            run_spml_benchmark(spec, output_dir, console)
            return
        if task != "cl":
            raise InputError(f"--task must be cl or spml, got {task!r}")
        _refuse_options(given, SPML_ONLY_OPTIONS, "spml")
        spec = BenchmarkSpec(
            datasets, strategy, model=model or "resnet34", epochs=300 if epochs is None else epochs,
            lrs=lr or [1e-4], batch_size=256 if batch_size is None else batch_size,
            seeds=seed or list(REFERENCE_SEEDS), valid_type=valid_type, eval_every=eval_every, num_cl=num_cl,
            clean_noisy=clean_noisy, clip_model=clip_model, types=strategy_type or [], batch_by=batch_by,
            precision=precision, hidden_dim=hidden_dim, init=init or "kaiming", valid_rule=valid_rule,
            lr_select=lr_select, lr_seed=lr_seed, vlpl_alpha=0.1 if vlpl_alpha is None else vlpl_alpha,
        )  # fmt: skip
        run_benchmark(spec, output_dir, console)  # prints each run and the table (main process only)


# Options that mean something in one task only: given in the other, they are refused rather than ignored.
CL_ONLY_OPTIONS = ("strategy_type", "valid_type", "eval_every", "num_cl", "clean_noisy", "batch_by", "hidden_dim",
                   "valid_rule", "lr_select", "lr_seed")  # fmt: skip
SPML_ONLY_OPTIONS = ("vlpl_beta", "vlpl_threshold", "vlpl_partial", "vlpl_temperature", "vlpl_defaults", "image_size",
                     "workers")  # fmt: skip


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (not its default). By the source's name: typer may carry its own click."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _refuse_options(given: set[str], options: tuple[str, ...], task: str) -> None:
    wrong = [f"--{name.replace('_', '-')}" for name in options if name in given]
    wrong = ["--type" if w == "--strategy-type" else w for w in wrong]
    if wrong:
        verb, them = ("applies", "it") if len(wrong) == 1 else ("apply", "them")
        raise InputError(f"{', '.join(wrong)} only {verb} to --task {task}; leave {them} out or pass --task {task}")


def generate_command(
    base: Annotated[str, typer.Argument(
        metavar="BASE", help="base to label: cifar10, cifar20, min10, min20, digits, mnist, fmnist, kmnist, or a new "
        "name for your own dataset given by --source (a Hub id or a folder)",
        show_default=False,
    )],  # fmt: skip
    output_dir: Annotated[Path, typer.Option(
        "--output-dir", "-o", metavar="DIR", help="folder for the labels table (labels.parquet) and the log"
    )],  # fmt: skip
    source: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="the base's archive or folder (mnist, fmnist, kmnist: the folder of its four IDX files); "
        "for a new base, a Hub dataset id ORG/NAME or a folder datasets reads (Parquet/Arrow, or one sub-folder per "
        "class) [default: none; digits needs none, the others --source or --download]"
    )] = None,  # fmt: skip
    split: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="custom source: the split to label [default: train]")] = None,  # fmt: skip
    image_column: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="custom source: its Image column [default: the only one]")] = None,  # fmt: skip
    label_column: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="custom source: its ClassLabel column [default: the only one]")] = None,  # fmt: skip
    class_names: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="custom source: class names for prompts, one per line in label order, or "
        "short<TAB>long [default: the ClassLabel's names]")] = None,  # fmt: skip
    download: Annotated[bool, typer.Option(help="download the base's official archive (checksum verified)")] = False,
    cache_dir: Annotated[Path, typer.Option(metavar="DIR", help="where --download keeps archives")] = Path(
        "~/.cache/aclbuild"
    ),
    labeler: Annotated[str, typer.Option(
        metavar="NAME", help="llava, vlm (any chat VLM: Idefics3/SmolVLM, Gemma 3, Qwen2-VL, LLaVA-OneVision, "
        "--model), clip (zero-shot CLIP or SigLIP: the least similar candidate, --model), synthetic, or replay "
        "(answers from --answers FILE)"
    )] = "llava",  # fmt: skip
    model: Annotated[str, typer.Option(
        metavar="ORG/NAME", help="the labeler's model, Hub id or local folder: LLaVA-NeXT (llava), an "
        "image-text-to-text model with a chat template (vlm, e.g. HuggingFaceTB/SmolVLM-256M-Instruct) or a model "
        "with image and text towers (clip, e.g. openai/clip-vit-large-patch14)"
    )] = "llava-hf/llava-v1.6-mistral-7b-hf",  # fmt: skip
    mode: Annotated[str, typer.Option(
        metavar="NAME", help="cl (which label does not belong) or ord (most related)"
    )] = "cl",  # fmt: skip
    num_rounds: Annotated[int, typer.Option(metavar="N", help="queries (labels) per image")] = 3,
    bias_reduction: Annotated[bool, typer.Option("--bias-reduction", "-R", help="budgeted candidates (-R)")] = False,
    protocol: Annotated[str, typer.Option(
        metavar="NAME", help="aclbuild, or reference: every reference behaviour at once (released candidate stream "
        "and question, fp16, batch 16, -R blocks of 16, long names, unlimited retries); options given explicitly "
        "still win"
    )] = "aclbuild",  # fmt: skip
    candidates: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="seeded (per image and round) or reference: the released sets' draws from numpy's "
        "global stream (cifar10, cifar20, min10, min20; -R: cifar10, min10). The order options are shown in is always "
        "aclbuild's: the reference's depended on its model's answers and retries [default: seeded; --protocol "
        "reference: reference]"
    )] = None,  # fmt: skip
    candidates_from: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="ask exactly the candidate sets of an earlier run's labels.parquet (any labeler) "
        "[default: none, draw them]"
    )] = None,  # fmt: skip
    answers: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="--labeler replay: the label file to replay (the reference tool's CSV, or a "
        "labels.parquet) [default: none]"
    )] = None,  # fmt: skip
    r_block: Annotated[Optional[int], typer.Option(
        metavar="N", help="-R: images whose draws share one budget snapshot [default: 64; --protocol reference: 16]"
    )] = None,  # fmt: skip
    long_label: Annotated[Optional[bool], typer.Option(
        "--long-label/--short-label", help="full class names in prompts [default: short; --protocol reference: long]",
        show_default=False,
    )] = None,  # fmt: skip
    batch_size: Annotated[Optional[int], typer.Option(
        metavar="N", help="images (generate: queries) per model pass [default: 8; --protocol reference: 16]"
    )] = None,  # fmt: skip
    num_workers: Annotated[Optional[int], typer.Option(
        metavar="N", help="DataLoader worker processes (per process) preparing batches (pixels, token ids) for the "
        "model; 0: the main process prepares them [default: the free cores, at most 4]"
    )] = None,  # fmt: skip
    seed: Annotated[int, typer.Option(metavar="N", help="seed of every candidate draw")] = 1126,
    matrix: Annotated[str, typer.Option(metavar="NAME", help="synthetic: uniform, weak, strong or noisy")] = "uniform",
    noise: Annotated[float, typer.Option(metavar="LAMBDA", help="synthetic noisy matrix: lambda")] = 0.1,
    prompt: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="named question: default (the reference tool's) or acl-min (the older one that made "
        "ACLMIN10/ACLMIN20) [default: default]"
    )] = None,  # fmt: skip
    prompt_file: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="Jinja question template using {{ options }} [default: none, --prompt's question]"
    )] = None,  # fmt: skip
    max_new_tokens: Annotated[int, typer.Option(metavar="N", help="longest generated answer")] = 30,
    max_retries: Annotated[Optional[str], typer.Option(
        metavar="N", help="re-asks of an unparseable answer before the query fails, or 'unlimited' [default: 10; "
        "--protocol reference: unlimited]"
    )] = None,  # fmt: skip
    dtype: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="bf16, fp16 or fp32 [default: bf16 on GPU, fp32 on CPU; --protocol reference: fp16]"
    )] = None,  # fmt: skip
    scoring: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="generate (the reference's) or likelihood (cached prefix, faster) [default: generate]"
    )] = None,  # fmt: skip
    limit: Annotated[Optional[int], typer.Option(
        metavar="N", help="label only the first N images [default: all]"
    )] = None,  # fmt: skip
    clip_template: Annotated[str, typer.Option(
        metavar="TEXT", help="--labeler clip: the text each class name is scored as, {name} standing for it"
    )] = "a photo of a {name}",  # fmt: skip
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --output-dir")] = False,
) -> None:
    """Label a base's (or your own dataset's) training images with a VLM, CLIP, a synthetic labeler, or a replayed
    label file: the labels table (which `aclbuild build` takes) and a log.

    Example: `aclbuild generate cifar10 --source cifar-10-python.tar.gz --scoring likelihood --output-dir labels/`
    """
    from aclbuild.labeling.settings import GenerateSettings, parse_max_retries, resolve_protocol
    from aclbuild.registry import get_base

    with user_errors():
        require_extra("label", "torch", "accelerate")  # every labeler runs under accelerate
        from aclbuild.labeling.runner import run_generate

        if download:
            from aclbuild.loaders.download import download_archive

            source = source or download_archive(get_base(base), cache_dir.expanduser())
        chosen = resolve_protocol(
            protocol, base, bias_reduction, candidates=candidates, r_block=r_block, prompt=prompt, dtype=dtype,
            max_retries=max_retries, batch_size=batch_size, long_label=long_label, scoring=scoring,
        )  # fmt: skip
        settings = GenerateSettings(
            base=base, labeler=labeler, model=model, mode=mode, num_rounds=num_rounds, bias_reduction=bias_reduction,
            long_label=chosen["long_label"], seed=seed, matrix=matrix, noise=noise, prompt=chosen["prompt"],
            prompt_file=str(prompt_file) if prompt_file else None, max_new_tokens=max_new_tokens,
            max_retries=parse_max_retries(chosen["max_retries"]), dtype=chosen["dtype"], scoring=chosen["scoring"],
            limit=limit, candidates=chosen["candidates"], r_block=chosen["r_block"], protocol=protocol,
            candidates_from=str(candidates_from) if candidates_from else None,
            answers=str(answers) if answers else None, split=split, image_column=image_column,
            label_column=label_column, class_names=str(class_names) if class_names else None,
            clip_template=clip_template,
        )  # fmt: skip
        folder = run_generate(settings, source, output_dir, resume=resume, batch_size=chosen["batch_size"],
                              command=["aclbuild", *sys.argv[1:]], num_workers=num_workers)  # fmt: skip
    console.print(f"wrote {folder}", markup=False, highlight=False, soft_wrap=True)
