"""`aclbuild push` of an ACLCIFAR10-sized repository (50,000 32x32 images) to the loopback Hub server of the tests.

Builds the repository with `aclbuild build` (the images of bench_build.py), starts tests/hub_server.py on
127.0.0.1, then times, each in a fresh process as a user would run them:
  push      the first push (validate, create repo, hash, upload, commit)
  re-push   the same folder again (no commit)
  verify    `aclbuild verify --against` (load_dataset into a fresh cache, every row hashed)
The push runs with PNG decoding and PIL's Image.open counted: both must stay at zero, and the server must hold
every file byte for byte as built (nothing re-encoded).

    python benchmarks/bench_push.py [--n 50000] [--workdir /tmp/bench_push]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from bench_build import make_pickle  # noqa: E402 - found through the sys.path entry above
from hub_server import TOKEN, HubServer  # noqa: E402

REPO = "aclorg/aclcifar10"
# Count every image decode the push could make: aclbuild's own decoder and PIL.
COUNTED = """
import atexit, sys
import PIL.Image, aclbuild.png
calls = {"decode_image": 0, "PIL.Image.open": 0}
def counted(name, fn):
    def wrapper(*a, **k):
        calls[name] += 1
        return fn(*a, **k)
    return wrapper
aclbuild.png.decode_image = counted("decode_image", aclbuild.png.decode_image)
PIL.Image.open = counted("PIL.Image.open", PIL.Image.open)
atexit.register(lambda: sys.stderr.write(f"DECODES {calls}\\n"))
from aclbuild.cli import main
sys.argv[0] = "aclbuild"
main()
"""


def run(env: dict, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", COUNTED, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"aclbuild {' '.join(args)} failed:\n{proc.stderr}")
    return seconds, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_push"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    source, repo = args.workdir / "aclcifar10.pkl", args.workdir / "repo"
    make_pickle(source, args.n)
    subprocess.run([sys.executable, "-m", "aclbuild", "build", str(source), "--dataset", "aclcifar10",
                    "--output-dir", str(repo), "--repo-id", REPO], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    files = {p.relative_to(repo).as_posix(): p for p in repo.rglob("*") if p.is_file()}
    total = sum(p.stat().st_size for p in files.values())
    print(f"{args.n:,} images: {len(files)} files, {total:,} bytes ({total / 2**20:.1f} MiB)")

    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=TOKEN, HF_HOME=str(args.workdir / "hf"))
        push, proc = run(env, "push", str(repo), "--repo-id", REPO)
        decodes = proc.stderr.rsplit("DECODES", 1)[1].strip()
        remote = hub.files(REPO)
        same = all(remote[rel] == path.read_bytes() for rel, path in files.items())
        repush, proc = run(env, "push", str(repo), "--repo-id", REPO)
        assert "no changes" in proc.stdout, proc.stdout
        verify, _ = run(env, "verify", REPO, "--against", str(repo))
    print(
        f"push      {push:6.2f} s  {total / 2**20 / push:6.1f} MiB/s  (process start, validate, hash, upload, commit)"
    )
    print(f"re-push   {repush:6.2f} s  no commit")
    print(f"verify    {verify:6.2f} s  load_dataset + every row hashed against the local build")
    print(f"image decodes during push: {decodes}; remote files byte-identical to the build: {same}")


if __name__ == "__main__":
    main()
