"""Training speed of the SPML benchmark's two models (issue 16 §4) on a fake VOC-sized set, baselines in the same run.

  clip-linear: a linear head on frozen CLIP image features (768-d, ViT-L/14's width), the features on the device,
               batch 8, Adam (VLPL's protocol): images/s of a training epoch over VOC's 4,574 training images;
  resnet50:    ResNet-50 at 448x448 (VLPL's size), batch 8, on random 500x375 JPEGs (VOC's typical size) made in
               memory and decoded, resized, flipped and normalised per image by the DataLoader pipeline
               (aclbuild.bench.spml_pipeline), three ways: fp32 with workers=0 (the baseline: decoding in the
               training process), fp32 with --workers workers, and bf16 autocast with --workers (GPU only).
Each run goes through aclbuild.bench.spml_train.train_spml_run (the "an" loss) for --epochs epochs and reports its
steady epoch (the fastest after the first, which carries warm-up and worker start); the validation and test splits
are kept tiny since the evaluation is not timed. No `datasets` import: it runs where only torch, accelerate and
Pillow are installed.

    python benchmarks/bench_spml.py            # GPU: 400 images (well under a minute on an H200); CPU: 32 at 224 px
    python benchmarks/bench_spml.py --smoke    # tiny, on CPU: checks the script runs (16 images at 64 px)
    python benchmarks/bench_spml.py --n 2000 --workers 16
    python benchmarks/bench_spml.py --batch-size 32    # how much of a step at batch 8 is its fixed cost
"""

from __future__ import annotations

import argparse
import io
import os
import platform

import numpy as np
import torch
from PIL import Image

from aclbuild.bench.spml import vlpl_settings
from aclbuild.bench.spml_data import SpmlSplit
from aclbuild.bench.spml_train import SpmlConfig, SpmlRunData, train_spml_run
from aclbuild.bench.train import make_accelerator

NUM_CLASSES = 20  # VOC's
VOC_TRAIN_IMAGES = 4_574  # VOC 2012's official train part (5,717) less the 20% validation split
CLIP_DIM = 768  # ViT-L/14's projected features


def fake_jpegs(n: int, seed: int, size: tuple[int, int] = (500, 375)) -> list[bytes]:
    """n JPEGs of ``size``: smooth random colour fields with noise (photo-like file sizes, not white noise's)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
        buffer = io.BytesIO()
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def fake_split(images: list, seed: int, train: bool) -> SpmlSplit:
    """Random multi-label targets (1-3 positives per image) and, in training, one observed positive each."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    scores = torch.rand(n, NUM_CLASSES, generator=g)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 for each row's highest score
    labels = (rank < torch.randint(1, 4, (n, 1), generator=g)).to(torch.uint8)  # the top 1-3 classes
    observed = scores.argmax(dim=1) if train else torch.full((n,), -1)
    return SpmlSplit("fake-voc", tuple(f"class{k}" for k in range(NUM_CLASSES)), images, labels, observed)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), torch {torch.__version__}"


def steady(seconds: list[float]) -> float:
    """The fastest epoch after the first (the first carries warm-up), or the only one."""
    return min(seconds[1:]) if len(seconds) > 1 else seconds[0]


def time_clip_linear(n: int, epochs: int, batch_size: int) -> float:
    """images/s of the linear head's training epochs on n random unit-norm CLIP-sized features."""
    g = torch.Generator().manual_seed(0)
    features = {key: torch.nn.functional.normalize(torch.randn(count, CLIP_DIM, generator=g), dim=1)
                for key, count in (("train", n), ("valid", 64), ("test", 64))}  # fmt: skip
    keys = ("train", "valid", "test")
    splits = [fake_split([b""] * len(features[key]), i, key == "train") for i, key in enumerate(keys)]
    data = SpmlRunData(*splits, features=features)
    config = SpmlConfig(model="clip-linear", epochs=epochs, lr=1e-3, batch_size=batch_size)
    seconds = train_spml_run("an", data, config, vlpl_settings("voc")).epoch_seconds
    return n / steady(seconds)


def time_resnet50(data: SpmlRunData, size: int, workers: int, precision: str, epochs: int,
                  batch_size: int) -> tuple[float, int]:  # fmt: skip
    """(images/s of ResNet-50's steady training epoch, optimiser steps per epoch)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate refuses a second precision in one process
    config = SpmlConfig(model="resnet50", epochs=epochs, batch_size=batch_size, image_size=size, workers=workers,
                        lr=1e-5)  # fmt: skip
    result = train_spml_run("an", data, config, vlpl_settings("voc"), accelerator=make_accelerator(precision=precision))
    return len(data.train) / steady(result.epoch_seconds), result.steps_per_epoch


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400 if gpu else 32, help="ResNet-50 training images")
    parser.add_argument("--size", type=int, default=448 if gpu else 224, help="ResNet-50's input side")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (VLPL: 8)")
    parser.add_argument("--smoke", action="store_true", help="tiny, to check the script runs (CPU)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.size, args.workers = 16, 64, min(args.workers, 2)
    if not gpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))  # leave the workers their cores
    clip_n = 512 if args.smoke else VOC_TRAIN_IMAGES
    print(f"{machine()}; fake VOC: {NUM_CLASSES} classes, 500x375 JPEGs, batch {args.batch_size}, {args.epochs} "
          f"epochs, {torch.get_num_threads()} torch threads")  # fmt: skip
    clip_speed = time_clip_linear(clip_n, args.epochs, args.batch_size)
    print(f"  clip-linear  {clip_n:,} images of {CLIP_DIM}-d features: {clip_speed:10.0f} images/s")
    images = fake_jpegs(args.n + 32, seed=0)
    data = SpmlRunData(fake_split(images[: args.n], 0, True), fake_split(images[args.n : args.n + 16], 1, False),
                       fake_split(images[args.n + 16 :], 2, False))  # fmt: skip
    kb = sum(map(len, images)) / len(images) / 1024
    runs = [("fp32", 0), ("fp32", args.workers)] + ([("bf16", args.workers)] if gpu else [])
    baseline = None
    for precision, workers in runs:
        speed, steps = time_resnet50(data, args.size, workers, precision, args.epochs, args.batch_size)
        baseline = baseline or speed
        print(f"  resnet50     {args.n:,} JPEGs ({kb:.0f} KiB) at {args.size} px, {precision}, workers {workers:2d}: "
              f"{speed:8.1f} images/s ({steps} steps/epoch; {speed / baseline:.2f}x workers-0 fp32)")  # fmt: skip


if __name__ == "__main__":
    main()
