"""Epoch time of ResNet18 on a CIFAR-sized synthetic set: the on-device fast path against a plain DataLoader loop.

Both paths train the same model (CIFAR-style ResNet18, FWD loss, Adam, batch 256) on the same synthetic set of
uint8 32x32 images with 3 CLs each, in the same run, through `aclbuild.bench.train.train_run`, batched as
--batch-by says (image: 256 images with their 3 CLs per step, libcll's and the default; pair: 256 pairs):
  fast:       the whole uint8 set on the device; crop (padding 4), flip and normalisation as batched tensor ops
  dataloader: torch DataLoader over a Dataset that crops, flips and normalises one image at a time on the CPU,
              --workers worker processes, pinned memory on GPU (what a torchvision pipeline does)
Prints the steady-state epoch time (the fastest epoch after the first, which carries warm-up) and images/s.

    python benchmarks/bench_train.py                 # GPU: 50,000 images; CPU: 2,048 (a ResNet18 epoch of 50,000
                                                     # 32x32 images takes many minutes on 2 cores)
    python benchmarks/bench_train.py --n 50000 --epochs 3 --workers 8
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from aclbuild.bench.train import RunData, TrainConfig, train_run
from aclbuild.cl_data import ClData, estimate_transition

CLASSES = tuple(str(k) for k in range(10))


def synthetic(n: int, seed: int) -> ClData:
    """n random 32x32 uint8 images, random true labels, 3 distinct random CLs per image."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    ord_labels = torch.randint(0, 10, (n,), generator=g)
    cls = torch.rand(n, 10, generator=g).argsort(dim=1)[:, :3]
    pair_image, pair_cl = torch.arange(n).repeat_interleave(3), cls.reshape(-1)
    matrix = estimate_transition(ord_labels, pair_image, pair_cl, 10)
    return ClData(images, ord_labels, pair_image, pair_cl, matrix, CLASSES, num_cl=3)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000 if torch.cuda.is_available() else 2_048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-by", default="image", choices=("image", "pair"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared CPU, 1 thread avoids spinning against other jobs

    train, small = synthetic(args.n, 0), synthetic(256, 1)  # evaluation sets kept small: training is timed
    data = RunData(train, small, small)
    print(f"{machine()}; {args.model}, {args.n:,} images 32x32, batch {args.batch_size} by {args.batch_by}, "
          f"{args.epochs} epochs, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    results = {}
    for loader in ("fast", "dataloader"):
        config = TrainConfig(
            model=args.model, epochs=args.epochs, lr=1e-4, batch_size=args.batch_size, seed=0,
            eval_every=args.epochs, loader=loader, workers=args.workers if loader == "dataloader" else 0,
            batch_by=args.batch_by,
        )  # fmt: skip
        seconds = train_run("FWD", data, config).epoch_seconds
        steady = min(seconds[1:]) if len(seconds) > 1 else seconds[0]
        results[loader] = steady
        print(f"  {loader:10s} epoch {steady:8.2f} s  ({args.n / steady:9.0f} images/s)  all epochs: "
              + ", ".join(f"{s:.2f}" for s in seconds))  # fmt: skip
    print(f"  fast path speed-up: {results['dataloader'] / results['fast']:.2f}x")
    if args.n != 50_000:
        print(f"  scaled to 50,000 images: fast {results['fast'] * 50_000 / args.n:.1f} s per epoch")


if __name__ == "__main__":
    main()
