"""`aclbuild generate` with a real (tiny, random) LLaVA-NeXT: the CLI end to end, likelihood scoring against greedy
generation, 2 processes against 1, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny_llava import PrefixPasses, build_tiny_llava

from aclbuild.labeling.outputs import PART_SUFFIX

ARGS = ["--scoring", "likelihood", "--limit", "24"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model")


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> Path:
    """The uninterrupted 1-process likelihood run that the others must equal."""
    from typer.testing import CliRunner

    from aclbuild.cli import app

    out = tmp_path_factory.mktemp("ref") / "labels"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["generate", "digits", "--model", str(tiny_model), *ARGS, "--batch-size", "3",
                                      "--output-dir", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "labels.parquet").to_pylist()


def test_cli_end_to_end_both_scorings(tiny_model, reference, tmp_path, cli):
    log = json.loads((reference / "labels.json").read_text())
    assert log["provenance"]["model"] == str(tiny_model) and log["provenance"]["scoring"] == "likelihood"
    assert log["provenance"]["dtype"] == "fp32" and log["prompt_split_exact"] is True
    assert log["statistics"]["queries"] == 72 and log["statistics"]["failed_queries"] == 0
    assert log["images_per_second"] > 0
    ref = rows(reference)
    assert all(r["label"] in r["candidates"] and r["answer"] == str(r["label"]) for r in ref)
    result = cli("generate", "digits", "--model", tiny_model, "--limit", "6", "--max-new-tokens", "3",
                 "--max-retries", "1", "--num-rounds", "2", "--output-dir", tmp_path / "gen")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    generated = rows(tmp_path / "gen")
    assert len(generated) == 12 and all(r["answer"] for r in generated)  # raw free-text answers are kept
    assert all((r["status"] == "ok") == (r["label"] >= 0) for r in generated)
    built = cli("build", reference / "labels.parquet", "--dataset", "acldigits", "--output-dir", tmp_path / "repo")
    assert built.exit_code == 0, built.stderr


def test_likelihood_picks_what_greedy_generation_answers(tiny_model):
    """Whenever greedy generation starts its answer with an option, likelihood scoring picks that option."""
    import torch

    from aclbuild.labeling.backend import Query, ask
    from aclbuild.labeling.candidates import uniform_candidates
    from aclbuild.labeling.llava import LlavaBackend
    from aclbuild.labeling.prompts import load_template
    from aclbuild.registry import get_base

    base, template = get_base("min10"), load_template("cl", None)  # long names: some options are 2 tokens
    rng = np.random.default_rng(0)
    queries = []
    for i in range(24):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        for r in range(3):
            names = [base.long_names[c] for c in uniform_candidates(1126, i, r, 10)]
            prefix, suffix = template.split_prompt(names)
            queries.append(Query(i, r, 0, image, names, names, template.prompt(names), prefix, suffix))
    greedy = LlavaBackend.from_pretrained(str(tiny_model), scoring="generate", max_new_tokens=3, batch_size=8)
    scored = LlavaBackend.from_pretrained(str(tiny_model), scoring="likelihood", batch_size=4)
    prefix_passes = PrefixPasses(scored.model)
    tokenizer = greedy.tokenizer
    words = sorted({t for n in base.long_names for t in tokenizer(n, add_special_tokens=False)["input_ids"]})
    for backend in (greedy, scored):  # favour min10's words, so that greedy answers often start with an option
        with torch.no_grad():
            backend.model.get_output_embeddings().weight[words] *= 3.0
    picks = ask(scored, queries)
    assert prefix_passes.count == 24  # each image once for its 3 rounds
    # the same picks for any grouping, and when a pass must hold fewer images (GPU memory)
    half = len(queries) // 2 + 1  # not on an image boundary
    assert [r.choice for r in ask(scored, queries[half:])] == [r.choice for r in picks[half:]]
    scored._images_per_pass = lambda bytes_per_image: 3
    assert [r.choice for r in ask(scored, queries)] == [r.choice for r in picks]
    compared = 0
    for q, said, picked in zip(queries, ask(greedy, queries), picks):
        said_ids = tokenizer(said.text, add_special_tokens=False)["input_ids"]
        starts = [
            k
            for k, a in enumerate(q.answers)
            if said_ids[: len(ids := tokenizer(a, add_special_tokens=False)["input_ids"])] == ids
        ]
        if starts:
            longest = max(starts, key=lambda k: len(q.answers[k]))
            assert picked.choice == longest, (q.options, said.text, q.answers[picked.choice])
            compared += 1
    assert compared >= 10, compared  # the check is not vacuous (pick_options' unit test covers 2-token paths)


def _launch(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.parametrize("extra", [[], ["--bias-reduction"]], ids=["uniform", "bias-reduction"])
def test_two_processes_give_the_one_process_result(tiny_model, reference, tmp_path, cli, extra):
    expected = reference
    if extra:  # -R: the 1-process result first (its blocks meet at a barrier per round under 2 processes)
        expected = tmp_path / "one"
        result = cli("generate", "digits", "--model", tiny_model, *ARGS, *extra, "--output-dir", expected)
        assert result.exit_code == 0, result.stderr
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "aclbuild", "generate",
           "digits", "--model", str(tiny_model), *ARGS, *extra, "--batch-size", "4", "--output-dir", str(out)]  # fmt: skip
    proc = _launch(cmd)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    assert json.loads((out / "labels.json").read_text())["processes"] == 2
    assert rows(out) == rows(expected)
    assert not (out / "parts").exists()


def test_killed_run_resumes_to_the_same_result(tiny_model, reference, tmp_path, cli):
    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "aclbuild", "generate", "digits", "--model", str(tiny_model), *ARGS,
           "--batch-size", "2", "--output-dir", str(out)]  # fmt: skip
    proc = _launch(cmd)
    deadline = time.monotonic() + 120
    while len(list((out / "parts").glob(f"part-*{PART_SUFFIX}"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never wrote a part file"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # a labeling worker left alive would hold the output pipe open: a hang here
    assert proc.returncode == -signal.SIGKILL and not (out / "labels.parquet").exists()
    done = len(list((out / "parts").glob(f"part-*{PART_SUFFIX}")))
    assert 3 <= done < 12
    result = cli("generate", "digits", "--model", tiny_model, *ARGS, "--batch-size", "5", "--resume",
                 "--output-dir", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert rows(out) == rows(reference)


def test_bias_reduction_encodes_each_image_once(tiny_model, tmp_path):
    """-R asks a block's rounds one call at a time; the kept prefix caches must give the labels of recomputing them."""
    from aclbuild.labeling.llava import LlavaBackend
    from aclbuild.labeling.runner import GenerateSettings, run_generate

    class ForgetPrefixes(LlavaBackend):
        keep_prefixes = property(lambda self: 0, lambda self, value: None)

    settings = GenerateSettings(
        base="digits", model=str(tiny_model), scoring="likelihood", limit=24, bias_reduction=True
    )
    kept = LlavaBackend.from_pretrained(str(tiny_model), scoring="likelihood", batch_size=5)
    kept_passes = PrefixPasses(kept.model)
    run_generate(settings, None, tmp_path / "kept", batch_size=5, backend=kept)
    forgot = ForgetPrefixes.from_pretrained(str(tiny_model), scoring="likelihood", batch_size=5)
    forgot_passes = PrefixPasses(forgot.model)
    run_generate(settings, None, tmp_path / "forgot", batch_size=5, backend=forgot)
    assert kept_passes.count == 24 and forgot_passes.count == 72  # 24 images x 3 rounds
    assert rows(tmp_path / "kept") == rows(tmp_path / "forgot")


def test_images_per_pass_fit_half_the_free_gpu_memory(tiny_model, monkeypatch):
    """On a GPU a pass takes fewer images when their key/value caches and logits would not fit (faked on CPU)."""
    import torch

    from aclbuild.labeling.backend import Query
    from aclbuild.labeling.llava import LlavaBackend

    backend = LlavaBackend.from_pretrained(str(tiny_model), scoring="likelihood", batch_size=32)
    image = np.zeros((32, 32, 3), np.uint8)
    prefix = "[INST] <image>\nWhich of these"
    queries = [Query(0, r, 0, image, ["cat"] * 4, ["cat"] * 4, prefix + " [cat] [/INST]", prefix, "[cat] [/INST]")
               for r in range(3)]  # fmt: skip
    (prepared,) = backend.prepare(queries).passes
    tokens = lambda text: len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    width = 3 * tokens("[cat] [/INST]")  # 3 queries, one row; "cat" is one token: only the suffixes are fed
    vocab = backend.model.config.text_config.vocab_size
    per_image = backend.kv_bytes_per_token * (backend.inputs.length(image, prefix) + width) + width * vocab * 4
    assert prepared.pack.ids.shape == (1, width) and prepared.bytes_per_image == per_image
    backend.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * per_image, 100 * per_image))
    assert backend._images_per_pass(per_image) == 5
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1000 * per_image, 2000 * per_image))
    assert backend._images_per_pass(per_image) == 32  # never more than --batch-size
