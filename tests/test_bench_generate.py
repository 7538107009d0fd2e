"""benchmarks/bench_generate.py runs on CPU: its cpu mode, and its gpu mode's code with the tiny model (--smoke)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generate.py"


def _bench(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_cpu_mode_reports_speed_and_share_outside_the_model():
    out = _bench("cpu", "--images", "64", "--repeat", "1")
    for scoring in ("likelihood", "generate"):
        line = next(line for line in out.splitlines() if line.strip().startswith(scoring))
        shares = [float(s) for s in re.findall(r"([\d.]+)% \(", line)]
        assert "images/s" in line and len(shares) == 2 and all(0 < s < 100 for s in shares), line
    share = re.search(r"outside transformers' generate\(\) calls: +([\d.]+)%", out)  # generate's decoding loop apart
    assert share and 0 < float(share.group(1)) < 100, out


def test_gpu_mode_code_runs_with_the_tiny_model():
    out = _bench("gpu", "--smoke", "--images", "8")
    assert "reference loop" in out and "aclbuild best" in out and re.search(r"speed-up [\d.]+x", out), out


def test_gpu_mode_code_runs_for_the_chat_vlm_labeler():
    out = _bench("gpu", "--smoke", "--labeler", "vlm", "--images", "8")
    assert "--labeler vlm" in out and "aclbuild best" in out and re.search(r"speed-up [\d.]+x", out), out
