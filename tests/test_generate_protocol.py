"""The reference protocol's pieces through the runner with a scripted model: the reference candidate streams
(resumable, the same in 2 processes), replaying a run's own labels and candidates, --protocol reference, the
reference's questions, parsing and vote ties, unlimited retries."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from aclbuild.errors import InputError, SourceError
from aclbuild.labeling.outputs import majority_vote
from aclbuild.labeling.parsing import parse_answer
from aclbuild.labeling.prompts import load_template
from aclbuild.labeling.reference_stream import ReducedReferenceStream, reference_candidate_sets
from aclbuild.labeling.runner import GenerateSettings, read_log, run_generate
from aclbuild.labeling.settings import resolve_protocol
from tests.fakes import make_tinyimagenet
from tests.test_generate_runner import Scripted, first_option


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A fake TinyImageNet with 12 training images per wnid: 120 min10 images."""
    return make_tinyimagenet(tmp_path_factory.mktemp("tiny"), bases=("min10",), n_train=12)


def rows(folder) -> list[dict]:
    return pq.read_table(folder / "labels.parquet").to_pylist()


def label(tmp_path, tiny, name, script=first_option, die_after=None, resume=False, batch_size=8, **kw):
    settings = GenerateSettings(**{"base": "min10", "long_label": True, **kw})
    backend = Scripted(script, die_after)
    return run_generate(settings, tiny, tmp_path / name, resume=resume, batch_size=batch_size, backend=backend,
                        command=["t"])  # fmt: skip


def test_reference_stream_with_a_model_asks_the_released_draws(tmp_path, tiny):
    out = label(tmp_path, tiny, "ref", candidates="reference")
    names = [r["name"] for r in rows(out) if r["round"] == 0]
    sets = reference_candidate_sets("min10", names, 3)
    assert all(sorted(r["candidates"]) == sorted(sets[r["index"], r["round"]].tolist()) for r in rows(out))
    assert read_log(out)["provenance"]["candidates"] == "reference"
    # batch size and an interruption change nothing
    with pytest.raises(KeyboardInterrupt):
        label(tmp_path, tiny, "cut", candidates="reference", die_after=5, batch_size=3)
    resumed = label(tmp_path, tiny, "cut", candidates="reference", resume=True, batch_size=3)
    assert rows(resumed) == rows(out)


def test_reduced_reference_with_a_model_then_replayed_from_its_own_table(tmp_path, tiny, cli):
    def answer(q):  # a model with a favourite class: budgets must push it out
        return "pizza" if "pizza" in q.options else q.options[1]

    out = label(tmp_path, tiny, "r", answer, bias_reduction=True, candidates="reference", r_block=16, num_rounds=4)
    table = rows(out)
    per_image = {}
    for r in table:
        per_image.setdefault(r["index"], []).append(r["label"])
    assert all(len(set(v)) == 4 for v in per_image.values())  # -R: an image's CLs are distinct
    stream = ReducedReferenceStream("min10", 120, 4, block=16)
    assert len(stream.blocks) == 8 and sorted(i for b in stream.blocks for i in b) == list(range(120))
    # a resumed -R run walks the stream through the units already done
    with pytest.raises(KeyboardInterrupt):
        label(tmp_path, tiny, "cut", answer, die_after=9, bias_reduction=True, candidates="reference", r_block=16,
              num_rounds=4)  # fmt: skip
    resumed = label(tmp_path, tiny, "cut", answer, resume=True, bias_reduction=True, candidates="reference",
                    r_block=16, num_rounds=4)  # fmt: skip
    assert rows(resumed) == table
    # replaying the run's own answers through the same stream finds every one of them, with the same candidates
    replayed = tmp_path / "replayed"
    result = cli("generate", "min10", "--source", tiny, "--labeler", "replay", "--answers", out / "labels.parquet",
                 "-R", "--candidates", "reference", "--r-block", "16", "--num-rounds", "4", "--long-label",
                 "-o", replayed)  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = read_log(replayed)["statistics"]
    assert stats["containment"]["rate"] == 1.0 and stats["containment"]["inside"] == 480
    assert [sorted(r["candidates"]) for r in rows(replayed)] == [sorted(r["candidates"]) for r in table]
    # another -R block size draws other sets: some answers then fall outside
    other = tmp_path / "block64"
    cli("generate", "min10", "--source", tiny, "--labeler", "replay", "--answers", out / "labels.parquet", "-R",
        "--candidates", "reference", "--r-block", "64", "--num-rounds", "4", "--long-label", "-o", other)
    assert read_log(other)["statistics"]["containment"]["rate"] < 1.0


def test_two_processes_replay_as_one(tmp_path, tiny, cli):
    source = label(tmp_path, tiny, "answers", first_option, bias_reduction=True, candidates="reference", r_block=16)
    args = ["min10", "--source", str(tiny), "--labeler", "replay", "--answers", str(source / "labels.parquet"), "-R",
            "--protocol", "reference"]  # fmt: skip
    one = tmp_path / "one"
    assert cli("generate", *args, "-o", one).exit_code == 0
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "aclbuild", "generate",
           *args, "-o", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_cpu_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert read_log(two)["processes"] == 2 and read_log(two)["statistics"]["containment"]["rate"] == 1.0
    assert rows(two) == rows(one)


def _cpu_env() -> dict:
    import os

    return {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""}


def test_candidates_from_asks_an_earlier_runs_questions(tmp_path, tiny):
    first = label(tmp_path, tiny, "first", first_option)
    again = label(tmp_path, tiny, "again", lambda q: q.options[3], candidates_from=str(first / "labels.parquet"))
    assert [r["candidates"] for r in rows(again)] == [r["candidates"] for r in rows(first)]  # same order shown too
    assert [r["label"] for r in rows(again)] == [r["candidates"][3] for r in rows(first)]
    assert read_log(again)["provenance"]["candidates"] == f"from {first / 'labels.parquet'}"
    with pytest.raises(InputError, match="no -R"):
        label(tmp_path, tiny, "bad", candidates_from=str(first / "labels.parquet"), bias_reduction=True)
    # a --limit run's table serves the same --limit; a replayed failed query is recorded as having no answer
    limited = label(tmp_path, tiny, "limited", lambda q: "?" if q.index == 2 else q.options[0], limit=30,
                    max_retries=0)  # fmt: skip
    again = label(tmp_path, tiny, "limited-again", candidates_from=str(limited / "labels.parquet"), limit=30)
    assert [r["candidates"] for r in rows(again)] == [r["candidates"] for r in rows(limited)]
    replayed = run_generate(GenerateSettings(base="min10", labeler="replay", answers=str(limited / "labels.parquet"),
                            candidates_from=str(limited / "labels.parquet"), limit=30), tiny, tmp_path / "rp")  # fmt: skip
    assert read_log(replayed)["statistics"]["containment"] == {"inside": 87, "labels": 87, "rate": 1.0, "no_answer": 3}
    with pytest.raises(SourceError, match="holds 30 images but the source has 120 \\(or the 40 that --limit labels"):
        label(tmp_path, tiny, "wrong-limit", candidates_from=str(limited / "labels.parquet"), limit=40)


def test_unlimited_retries_and_reference_parsing(tmp_path, tiny):
    def stubborn(q):  # unparseable 12 times (past the default cap of 10), then "(n)" picks option n
        return "hmm" if q.attempt < 12 else f"({q.index % 4 + 1})"

    out = label(tmp_path, tiny, "u", stubborn, max_retries=None, limit=10, num_rounds=1)
    assert all(r["status"] == "ok" and r["retries"] == 12 for r in rows(out))
    assert all(r["label"] == r["candidates"][r["index"] % 4] for r in rows(out))
    assert read_log(out)["provenance"]["max_retries"] == "unlimited"
    capped = label(tmp_path, tiny, "c", stubborn, limit=10, num_rounds=1)
    assert all(r["status"] == "failed" and r["retries"] == 10 for r in rows(capped))


def test_parsing_numbers_as_the_reference():
    options = ["airplane", "automobile", "bird", "cat"]
    assert parse_answer("2", options) == 1 and parse_answer("(4)", options) == 3  # CL mode too
    assert parse_answer("(3) automobile", options) == 1  # the name wins, as the reference reads it
    assert parse_answer("(3) spaceship", options) is None  # ... and a wrong name is asked again
    assert parse_answer("0", options) is None and parse_answer("(9)", options) is None  # out of range: retry
    assert parse_answer("3", ["7", "3", "0", "5"]) == 1  # numbers as class names stay names


def test_vote_ties_go_to_the_smallest_class():
    assert majority_vote([9, 4, 6]) == 4 and majority_vote([9, 9, 4]) == 9 and majority_vote([5, 2, 5, 2]) == 2


def test_the_reference_questions_word_for_word():
    options = ["airplane", "automobile", "bird", "cat"]
    assert load_template("cl", None).prompt(options) == (
        "[INST] <image>\nWhich label does not belong to this image? Answer the question with a single word from "
        "[airplane, automobile, bird, cat] [/INST]"
    )
    assert load_template("ord", None).prompt(options[:2]) == (
        "[INST] <image>\nWhich is the most related label to this image? (1) airplane (2) automobile Please respond "
        "with only the number of the correct answer [/INST]"
    )
    assert load_template("cl", None, "acl-min").prompt(options) == (
        "[INST] <image>\nWhich label does not belong to this image? Please answer with one word from "
        "[airplane, automobile, bird, cat] [/INST]"
    )
    old_ord = load_template("ord", None, "acl-min")
    assert old_ord.prompt(options[:2]) == (
        "[INST] <image>\nWhich is the most related label to this image? Please answer with exactly one word from "
        "[airplane, automobile] [/INST]"
    )
    assert not old_ord.numbered and load_template("ord", None).numbered


def test_older_ord_question_scores_names(tmp_path, tiny):
    seen = []
    out = label(tmp_path, tiny, "o", lambda q: seen.append(q) or q.options[2], mode="ord", prompt="acl-min",
                limit=5, num_rounds=1)  # fmt: skip
    assert all(q.answers == q.options and "exactly one word from" in q.prompt for q in seen)
    assert all(r["label"] == 2 for r in rows(out))


def test_protocol_reference_sets_every_reference_behaviour(tmp_path, tiny, cli):
    chosen = resolve_protocol("reference", "min10", bias_reduction=False)
    assert chosen == {"candidates": "reference", "r_block": 16, "prompt": "acl-min", "dtype": "fp16",
                      "max_retries": None, "batch_size": 16, "long_label": True, "scoring": "generate"}  # fmt: skip
    assert resolve_protocol("reference", "cifar10", bias_reduction=False)["prompt"] == "default"
    assert resolve_protocol("aclbuild", "min10", bias_reduction=True)["r_block"] == 64
    answers = label(tmp_path, tiny, "a", candidates="reference")
    out = tmp_path / "p"
    result = cli("generate", "min10", "--source", tiny, "--labeler", "replay", "--answers", answers / "labels.parquet",
                 "--protocol", "reference", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["protocol"] == "reference" and run["candidates"] == "reference" and run["long_label"] is True
    assert read_log(out)["provenance"]["protocol"] == "reference"
    assert read_log(out)["statistics"]["containment"]["rate"] == 1.0
    # a base without a released stream is refused under the reference protocol unless the stream is chosen
    result = cli("generate", "digits", "--protocol", "reference", "-o", tmp_path / "d")
    assert result.exit_code == 2 and "use --candidates seeded" in result.output
    result = cli("generate", "digits", "--labeler", "synthetic", "--protocol", "reference", "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output
