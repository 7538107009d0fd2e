"""The `aclbuild generate` runner with a scripted backend: retries, failed queries, ord mode, -R, statistics,
resume and batch-size invariance, the outputs `aclbuild build` takes, and bad input through the CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from aclbuild.errors import InputError, OutputExistsError
from aclbuild.labeling.backend import Query, Reply
from aclbuild.labeling.outputs import PART_SUFFIX
from aclbuild.labeling.runner import GenerateSettings, read_log, run_generate
from aclbuild.loaders.labels_table import read_table_metadata


class Scripted:
    """Answers chosen by the test, ``script(query) -> text``, through the three stages every labeler has (so the
    runner's DataLoader path is the one exercised); counts calls and can die (as Ctrl-C would) after some."""

    model_id, revision = "scripted", "test"

    def __init__(self, script, die_after: int | None = None) -> None:
        self.script, self.die_after, self.calls, self.asked = script, die_after, 0, []

    def prepare(self, queries: list[Query]) -> list[Query]:  # a worker: the queries, without their images
        return [q.without_image() for q in queries]

    def run(self, queries: list[Query]) -> list[str]:  # the main process, as a model's forward passes
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.asked += queries
        return [self.script(q) for q in queries]

    def replies(self, queries: list[Query], prepared, texts: list[str]) -> list[Reply]:
        return [Reply(text) for text in texts]


def first_option(q: Query) -> str:
    return q.options[0]


def table(folder) -> list[dict]:
    return pq.read_table(folder / "labels.parquet").to_pylist()


def run(tmp_path, name, script=first_option, batch_size=8, **kw):
    settings = GenerateSettings(**{"base": "digits", "limit": 30, **kw})
    out = run_generate(settings, None, tmp_path / name, batch_size=batch_size, backend=Scripted(script), command=["t"])
    return out


def test_outputs_table_log_and_build(tmp_path, cli):
    out = run(tmp_path, "a")
    rows = table(out)
    assert len(rows) == 90 and [(r["index"], r["round"]) for r in rows[:4]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert all(r["label"] == r["candidates"][0] and len(set(r["candidates"])) == 4 for r in rows)
    assert not (out / "labels.pkl").exists()  # the pickle is `aclbuild export`'s, from the built repository
    log = read_log(out)
    assert read_table_metadata(out / "labels.parquet")["provenance"] == log["provenance"]
    stats = log["statistics"]
    noisy = sum(r["label"] == r["ord_label"] for r in rows)
    assert stats["noise_rate"] == pytest.approx(noisy / 90) and stats["failed_queries"] == 0
    assert sum(stats["cls_per_class"]) == 90 and len(stats["transition_matrix"]) == 10
    assert log["provenance"]["model"] == "scripted" and log["provenance"]["seed"] == 1126
    assert len(log["provenance"]["prompt_sha256"]) == 64 and log["command"] == "t"
    result = cli("build", out / "labels.parquet", "--dataset", "acldigits", "--output-dir", tmp_path / "repo")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "repo" / "aclbuild.json").read_text())
    assert manifest["provenance"]["labeler"] == "llava" and manifest["provenance"]["num_rounds"] == 3


def test_retries_then_failures_and_build_refuses(tmp_path, cli):
    def script(q: Query) -> str:
        if q.index % 3 == 0:
            return "no idea"  # never parseable: fails after --max-retries re-asks
        if q.attempt == 0 and q.index % 3 == 1:
            return f"{q.options[0]} or {q.options[1]}"  # ambiguous the first time
        return q.options[2]

    out = run(tmp_path, "a", script, max_retries=2)
    rows = table(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 30 and all(r["label"] == -1 and r["retries"] == 2 for r in failed)
    assert {r["retries"] for r in rows if r["index"] % 3 == 1} == {1}
    retried = [r for r in rows if r["index"] % 3 == 1]
    assert all(r["label"] == r["candidates"][2] for r in retried)  # the label is read against the order re-shown
    stats = read_log(out)["statistics"]
    assert stats["failed_queries"] == 30 and stats["retries"] == 30 * 2 + 30
    assert stats["retry_rate"] == pytest.approx(90 / (90 + 90))
    result = cli("build", out / "labels.parquet", "--dataset", "acldigits", "--output-dir", tmp_path / "repo")
    assert result.exit_code == 2 and "failed query" in result.stderr and "--drop-failed" in result.stderr
    result = cli("build", out / "labels.parquet", "--dataset", "acldigits", "-o", tmp_path / "repo", "--drop-failed")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "repo" / "aclbuild.json").read_text())["splits"]["train"]["num_examples"] == 20


def test_ord_mode_accuracy_and_majority_vote(tmp_path):
    from aclbuild.loaders.digits import read_digits

    truth = [r.ord_label for r in read_digits("train")[:20]]

    def by_truth(q: Query) -> str:  # right in rounds 0 and 1, wrong in round 2; answers as "(n) name"
        label = truth[q.index] if q.round_ < 2 else (truth[q.index] + 1) % 10
        return f"({q.options.index(str(label)) + 1}) {label}"

    settings = GenerateSettings(base="digits", limit=20, mode="ord")
    out = run_generate(settings, None, tmp_path / "o", backend=Scripted(by_truth))
    stats = read_log(out)["statistics"]
    assert stats["accuracy_per_round"] == [1.0, 1.0, 0.0]
    assert stats["majority_vote_accuracy"] == 1.0
    assert read_table_metadata(out / "labels.parquet")["provenance"]["mode"] == "ord"  # build refuses the table
    backend = Scripted(by_truth)
    run_generate(settings, None, tmp_path / "o2", backend=backend)
    assert all(q.options == [str(d) for d in range(10)] for q in backend.asked)  # all K, in class order


def lowest_option(q: Query) -> str:
    return min(q.options)  # a labeler strongly biased towards small digits


def test_bias_reduction_flattens_a_biased_labeler(tmp_path):
    plain = [r["label"] for r in table(run(tmp_path, "plain", lowest_option, limit=200))]
    reduced_rows = table(run(tmp_path, "r", lowest_option, limit=200, bias_reduction=True))
    reduced = [r["label"] for r in reduced_rows]
    by_image: dict[int, list[int]] = {}
    for r in reduced_rows:
        by_image.setdefault(r["index"], []).append(r["label"])
    assert all(len(set(v)) == 3 for v in by_image.values())  # -R: an image's CLs are distinct
    assert max(Counter(reduced).values()) < max(Counter(plain).values())
    assert np.std(list(Counter(reduced).values())) < 0.6 * np.std(list(Counter(plain).values()))
    again = table(run(tmp_path, "r2", lowest_option, limit=200, bias_reduction=True, batch_size=5))
    assert [r["label"] for r in again] == reduced  # independent of the batch size


@pytest.mark.parametrize("bias_reduction", [False, True])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, bias_reduction):
    settings = GenerateSettings(base="digits", limit=70, bias_reduction=bias_reduction)
    whole = run_generate(settings, None, tmp_path / "whole", batch_size=8, backend=Scripted(lowest_option))
    with pytest.raises(KeyboardInterrupt):
        run_generate(settings, None, tmp_path / "cut", batch_size=4, backend=Scripted(lowest_option, die_after=5))
    assert len(list((tmp_path / "cut" / "parts").glob(f"part-*{PART_SUFFIX}"))) == 5
    with pytest.raises(OutputExistsError):
        run_generate(settings, None, tmp_path / "cut", backend=Scripted(lowest_option))
    resumed_backend = Scripted(lowest_option)
    run_generate(settings, None, tmp_path / "cut", resume=True, batch_size=16, backend=resumed_backend)
    assert len({(q.index, q.round_) for q in resumed_backend.asked}) == 210 - 5 * (4 if bias_reduction else 12)
    assert table(tmp_path / "cut") == table(whole)
    with pytest.raises(InputError, match="other settings"):
        run_generate(GenerateSettings(base="digits", limit=70, seed=1), None, tmp_path / "cut", resume=True,
                     backend=Scripted(lowest_option))  # fmt: skip


def test_synthetic_labeler_matches_the_foundation(tmp_path, cli):
    from aclbuild.labeling.synthetic import draw_cls, transition_matrix
    from aclbuild.loaders.digits import read_digits

    result = cli("generate", "digits", "--labeler", "synthetic", "--matrix", "strong", "--limit", "40",
                 "--batch-size", "7", "--output-dir", tmp_path / "s")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cls = np.array([r["label"] for r in table(tmp_path / "s")]).reshape(40, 3)  # rows by image, then round
    ys = np.array([r.ord_label for r in read_digits("train")[:40]])
    expected = draw_cls(ys, transition_matrix("strong", 10, 1126), 3, 1126)
    assert np.array_equal(cls, expected)


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuchbase"], "unknown base"),
        (["cifar10"], "needs --source/--test-source"),
        (["cifar10", "--source", "/nonexistent/cifar-10-python.tar.gz"], "does not exist"),
        (["digits", "--model", "/nonexistent/model"], "cannot load a LLaVA-NeXT model"),
        (["digits", "-R", "--num-rounds", "8"], "K - 3"),
        (["digits", "--prompt-file", "PROMPT"], "options"),
        (["digits", "--labeler", "blip"], "unknown --labeler"),
        (["digits", "--mode", "both"], "unknown --mode"),
        (["digits", "--scoring", "beam", "--model", "MODEL"], "unknown --scoring"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(tmp_path, cli, args, message):
    prompt = tmp_path / "p.jinja"
    prompt.write_text("Which label does not belong to this image?", encoding="utf-8")
    args = [str(prompt) if a == "PROMPT" else str(tmp_path / "nomodel") if a == "MODEL" else a for a in args]
    result = cli("generate", *args, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing is written until every option is checked and the model loads
