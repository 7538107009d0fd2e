"""The repository folder format has one owner, aclbuild/repository/: nothing else names the manifest file or builds
shard paths, and the manifest is read one way, with one-line errors for a missing, unparseable or malformed file."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import aclbuild
from aclbuild.errors import SourceError
from aclbuild.repository import (
    MANIFEST, Manifest, SplitInfo, decode_rows, manifest_json, parse_manifest, read_manifest, read_table, row_values,
    split_shards, write_manifest,
)  # fmt: skip
from aclbuild.validate import validate_repository

PACKAGE = Path(aclbuild.__file__).parent
OWNER = PACKAGE / "repository"
MANIFEST_PATH = re.compile(r"(^|/)aclbuild\.json$")  # the file name as a path, not prose that mentions it


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions (prose, not code)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def format_violations(source: str) -> list[str]:
    """Where code (docstrings aside) names the manifest file or builds a shard path: the string "aclbuild.json" as
    a path, a path joined with "data" (the shards' folder), a shard name or glob ("-of-", "*.parquet")."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.JoinedStr):  # its literal parts, "{}" for each value: f"{d}/x.json" -> "{}/x.json"
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value
        if text is not None and not re.search(r"\s", text):  # a message with spaces may name them; a path has none
            if MANIFEST_PATH.search(text):
                found.append(f"line {node.lineno}: names the manifest file {text!r}")
            if "*.parquet" in text or "-of-" in text and ".parquet" in text:
                found.append(f"line {node.lineno}: a shard name or glob {text!r}")
        joined = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            joined = [node.left, node.right]
        elif isinstance(node, ast.Call):
            called = getattr(node.func, "id", getattr(node.func, "attr", ""))
            joined = node.args if called in ("Path", "joinpath") else []
        if any(isinstance(part, ast.Constant) and part.value in ("data", "data/") for part in joined):
            found.append(f"line {node.lineno}: joins the shards' folder 'data' into a path")
    return found


def test_the_guard_catches_what_the_modules_did_before():
    """The lines that builder, validate, hub and export held before the format had one owner."""
    before = {
        'MANIFEST = "aclbuild.json"': "manifest file",
        'size = sum(p.stat().st_size for p in (staged / "data").glob("*.parquet"))': "shard",
        'data = folder / "data"': "'data'",
        'path = Path(folder, "data", f"{split}-{i:05d}-of-{n:05d}.parquet")': "shard",
        'text = (folder / "aclbuild.json").read_text()': "manifest file",
        'text = open(f"{folder}/aclbuild.json").read()': "manifest file",
    }
    for line, what in before.items():
        assert any(what in v for v in format_violations(line)), line
    prose = (
        '"""Reads aclbuild.json and data/train-00000-of-00001.parquet."""\nhelp = "named in aclbuild.json"\n'
        'problem = f"data/{name}: not named {{split}}-XXXXX-of-XXXXX.parquet"\nlicense = "imagenet-terms-of-access"\n'
    )
    assert format_violations(prose) == []


def test_no_module_outside_the_repository_package_names_the_manifest_or_builds_shard_paths():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if OWNER not in path.parents:
            found = format_violations(path.read_text(encoding="utf-8"))
            if found:
                offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}, "use aclbuild.repository (MANIFEST, read_manifest, split_shards, ...) instead"


# ---------------------------------------------------------------- the manifest


def _manifest() -> Manifest:
    return Manifest("digits-uniform", "org/x", {"train": SplitInfo("train", 3, 120, 1, "ab" * 32)}, {"seed": 1})


def test_the_manifest_round_trips(tmp_path):
    path = write_manifest(tmp_path, _manifest())
    assert path == tmp_path / MANIFEST
    assert read_manifest(tmp_path) == _manifest()
    assert json.loads(path.read_text())["splits"]["train"]["num_examples"] == 3  # the keys as before, for old readers


@pytest.mark.parametrize(
    "text, expect",
    [
        (None, "aclbuild.json (the build's content hashes) is missing; rebuild"),
        ("{not json", "aclbuild.json does not parse (Expecting property name"),
        ("[1, 2]", "aclbuild.json is malformed: not a JSON object"),
        ('{"dataset": "x"}', "'splits' is not an object of splits"),
        ('{"splits": {"train": 3}}', "split 'train' is not an object"),
        ('{"splits": {"train": {"num_examples": 3, "num_bytes": 1, "num_shards": true, "sha256": "a"}}}',
         "split 'train' lacks a count num_shards"),
        ('{"splits": {"train": {"num_examples": -1, "num_bytes": 1, "num_shards": 1, "sha256": "a"}}}',
         "split 'train' lacks a count num_examples"),
        ('{"splits": {"train": {"num_examples": 3, "num_bytes": 1, "num_shards": 1}}}', "lacks its content hash"),
        ('{"dataset": 7, "splits": {}}', "'dataset' is not a str"),
    ],
)
def test_parse_manifest_refuses_with_one_line(text, expect):
    with pytest.raises(SourceError) as caught:
        parse_manifest(text)
    message = str(caught.value)
    assert expect in message and "\n" not in message, message
    assert message.endswith("rebuild the folder with `aclbuild build`")


def test_parse_manifest_names_the_file_and_the_fix_it_is_given():
    with pytest.raises(SourceError, match=r"^the repo's aclbuild.json does not parse .*; push it again$"):
        parse_manifest("{", where="the repo's aclbuild.json", fix="push it again")


def test_read_manifest_names_the_folders_file(tmp_path):
    with pytest.raises(SourceError, match=f"^{re.escape(str(tmp_path / MANIFEST))} .* is missing"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_bytes(b"\xff\xfe")
    with pytest.raises(SourceError, match="cannot be read"):
        read_manifest(tmp_path)


@pytest.fixture
def repo_copy(digits_repo, tmp_path) -> Path:
    return Path(shutil.copytree(digits_repo, tmp_path / "digits-uniform"))


@pytest.mark.parametrize(
    "damage, expect",
    [
        ("", "aclbuild.json (the build's content hashes) is missing"),
        ("{", "aclbuild.json does not parse"),
        ('{"splits": {"train": {"num_examples": "many"}}}', "aclbuild.json is malformed: split 'train' lacks a count"),
    ],
)
def test_validate_stats_and_push_report_a_broken_manifest_in_one_line(cli, repo_copy, damage, expect):
    if damage:
        (repo_copy / MANIFEST).write_text(damage)
    else:
        (repo_copy / MANIFEST).unlink()
    problems = validate_repository(repo_copy)
    assert len(problems) == 1 and problems[0].startswith(expect), problems
    for args in (("validate", repo_copy), ("stats", repo_copy), ("push", repo_copy, "--org", "org", "--dry-run")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0] and "Traceback" not in result.output, (args, result.stderr)


def test_export_names_the_pickle_from_the_manifest_and_else_from_the_folder(cli, repo_copy, tmp_path):
    assert cli("export", repo_copy, "-o", tmp_path / "a").exit_code == 0
    assert (tmp_path / "a" / "digitsuniform.pkl").is_file()
    (repo_copy / MANIFEST).write_text(manifest_json(Manifest("aclcifar10", None, read_manifest(repo_copy).splits)))
    assert cli("export", repo_copy, "-o", tmp_path / "b").exit_code == 0
    assert (tmp_path / "b" / "aclcifar10.pkl").is_file()


# ---------------------------------------------------------------- one row decoder


def test_one_decoder_gives_every_readers_view_of_the_rows(digits_repo):
    table = read_table(digits_repo, "train")
    rows = decode_rows(table)
    assert len(rows) == 1400 and rows.cl_labels.shape == (1400, 3) and rows.ord_labels.dtype.kind == "i"
    assert row_values(table)[5] == (rows.names[5], rows.images[5], int(rows.ord_labels[5]), rows.cl_labels[5].tolist())
    labels_only = decode_rows(read_table(digits_repo, "test", ["ord_labels", "cl_labels"]))
    assert labels_only.names is None and labels_only.images is None and labels_only.cl_labels is None
    assert len(split_shards(digits_repo)["test"]) == 1


def test_the_decoder_marks_a_missing_true_label_no_label():
    images = pa.array([{"bytes": b"x", "path": None}] * 2, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"names": ["a", "b"], "images": images, "ord_labels": pa.array([None, 4], pa.int64()),
                      "cl_labels": pa.array([[1], [2]], pa.list_(pa.int64(), 1))})  # fmt: skip
    assert decode_rows(table).ord_labels.tolist() == [-1, 4]
    batch = table.to_batches()[0]  # verify decodes record batches as they stream in
    assert row_values(batch) == [("a", b"x", -1, [1]), ("b", b"x", 4, [2])]
