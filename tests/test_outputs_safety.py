"""Issue 15 §1 and the output items of §3: no verb destroys its input or a user's file, a killed run's temporaries
are removed by the next, and every output mistake (a file, a path under a file, a read-only folder, a full disk,
--max-shard-size 0) is one `error:` line with exit 2 (bad input) or 1 (failed work), nothing left half-written.

Read-only folders: the tests chmod a folder 0555 where that binds; this suite also runs as root, whom permissions do
not bind, so each case is also simulated (os.access answering no, or a write raising EACCES).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import make_legacy_dict, quiet_env, write_pickle
from tests.fakes import make_cifar10_archive

DEAD_PID = 999_999_999  # above any pid_max: no process has it
IS_ROOT = os.geteuid() == 0


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (itself included) with its bytes (None for a folder): compared before and after."""
    found = {".": None if root.is_dir() else root.read_bytes()}
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        found[path.relative_to(root).as_posix()] = None if path.is_dir() else path.read_bytes()
    return found


def one_error_line(result, expect: str, code: int = 2) -> str:
    """The single `error: ...` line of a refused command, checked for its exit code and ``expect``."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expect in lines[0] and "Traceback" not in result.output, lines[0]
    return lines[0]


def hidden(folder: Path) -> list[str]:
    """Hidden names in ``folder``: a temporary left behind would show here."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def labels_pkl(tmp_path) -> Path:
    """A 40-image legacy pickle, alone in its folder ``in/``."""
    (tmp_path / "in").mkdir()
    return write_pickle(tmp_path / "in" / "labels.pkl", make_legacy_dict())


# ---------------------------------------------------------------- §1 never onto, holding or inside an input


def test_build_overwrite_onto_the_folder_holding_its_labels_is_refused(cli, labels_pkl):
    folder = labels_pkl.parent
    before = tree(folder)
    result = cli("build", labels_pkl, "-d", "aclcifar10", "-o", folder, "--overwrite")
    one_error_line(result, f"holds LABELS {labels_pkl}: writing there would replace the input")
    assert tree(folder) == before


@pytest.mark.parametrize("where", ["holds", "lies inside"])
def test_build_output_holding_or_inside_its_image_source_is_refused(cli, tmp_path, where):
    source = make_cifar10_archive(tmp_path / "images", n_per_batch=2, n_test=2, as_folder=True)
    (tmp_path / "l.csv").write_text("a.png,cat,dog,bird\n")
    out = tmp_path / "images" if where == "holds" else source / "out"
    before = tree(tmp_path / "images")
    result = cli("build", tmp_path / "l.csv", "-d", "aclcifar10", "--source", source, "-o", out, "--overwrite")
    one_error_line(result, f"{where} --source {source}")
    assert tree(tmp_path / "images") == before


def test_build_output_onto_its_test_source_alone_is_refused(cli, tmp_path, labels_pkl):
    source = make_cifar10_archive(tmp_path / "test-images", n_per_batch=2, n_test=2)
    before = tree(tmp_path / "test-images")
    result = cli("build", labels_pkl, "-d", "aclcifar10", "--test-source", source, "-o", source.parent, "--overwrite")
    one_error_line(result, f"holds --test-source {source}")
    assert tree(tmp_path / "test-images") == before


def test_export_onto_or_inside_its_repository_is_refused(cli, digits_repo):
    before = tree(digits_repo)
    for out in (digits_repo, digits_repo / "pickles"):
        result = cli("export", digits_repo, "-o", out, "--overwrite")
        one_error_line(result, f"lies inside the repository {digits_repo}")
    assert tree(digits_repo) == before


def test_export_into_an_existing_empty_folder_writes_the_pickle_inside_it(cli, digits_repo, tmp_path):
    """-o is always the folder the pickle goes into: an existing folder stays a folder (it was replaced by a file)."""
    out = tmp_path / "pickles"
    out.mkdir()
    result = cli("export", digits_repo, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_dir() and sorted(p.name for p in out.iterdir()) == ["digitsuniform.pkl"]
    (out / "digitsuniform.pkl").unlink()
    (out / "digitsuniform.pkl").mkdir()  # a folder where the pickle goes: never replaced, even with --overwrite
    result = cli("export", digits_repo, "-o", out, "--overwrite")
    one_error_line(result, "digitsuniform.pkl is a folder")
    assert (out / "digitsuniform.pkl").is_dir()


@pytest.mark.parametrize("where", ["holds", "lies inside"])
def test_generate_output_holding_or_inside_its_image_folder_is_refused(cli, tmp_path, where):
    from PIL import Image

    pets = tmp_path / "data" / "pets"
    for name in ("cat", "dog"):
        (pets / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(pets / name / "0.png")
    before = tree(tmp_path / "data")
    out = pets.parent if where == "holds" else pets / "labels"
    result = cli("generate", "pets", "--source", pets, "--labeler", "synthetic", "--num-rounds", "1", "-o", out,
                 "--resume")  # fmt: skip
    one_error_line(result, f"{where} --source {pets}")
    assert tree(tmp_path / "data") == before


def test_benchmark_and_report_outputs_inside_a_repository_are_refused(cli, digits_repo):
    before = tree(digits_repo)
    result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "-o", digits_repo / "b")
    one_error_line(result, f"lies inside the dataset {digits_repo}")
    result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "-o", digits_repo)
    one_error_line(result, f"is the dataset {digits_repo}")
    result = cli("report", digits_repo, "-o", digits_repo / "report")
    one_error_line(result, f"lies inside the input {digits_repo}")
    assert tree(digits_repo) == before


def test_quickstart_refuses_a_folder_holding_files_it_did_not_write(cli, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    result = cli("quickstart", "-o", tmp_path)
    one_error_line(result, "holds thesis.tex, which the quickstart did not write")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- §1 a killed run's temporaries; the umask


KILL_DURING_BUILD = """
import os, signal, sys
import aclbuild.builder as builder
from aclbuild.cli import main

def killed(*args, **kwargs):  # the build dies (kill -9) with its shards half-written
    folder = args[0]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / ".train-00000.parquet.partial").write_bytes(b"PAR1" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)

builder.write_split = killed
sys.argv = ["aclbuild", *sys.argv[1:]]
main()
"""


def test_a_rebuild_removes_what_a_killed_build_left_and_nothing_else(cli, tmp_path, labels_pkl):
    out = tmp_path / "out" / "repo"
    args = [str(labels_pkl), "-d", "aclcifar10", "-o", str(out)]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_BUILD, "build", *args], env=quiet_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = hidden(out.parent)  # the staging folder, under a name only aclbuild writes
    assert left.startswith(".repo.") and left.endswith(".aclbuild.tmp") and not out.exists()
    theirs = [out.parent / ".repo.tmp", out.parent / f".other.{DEAD_PID}.aclbuild.tmp"]  # not this output's
    alive = out.parent / f".repo.{os.getppid()}.aclbuild.tmp"  # a live process's: it may still rename it
    for path in (*theirs, alive):
        path.mkdir()
    result = cli("build", *args)
    assert result.exit_code == 0, result.output
    assert hidden(out.parent) == sorted(p.name for p in (*theirs, alive))


KILL_DURING_GENERATE_OUTPUT = """
import os, signal, sys
import pyarrow.parquet as pq
from aclbuild.cli import main

def killed(table, where, **kwargs):  # killed while the labels table is half-written
    open(where, "wb").write(b"PAR1")
    os.kill(os.getpid(), signal.SIGKILL)

pq.write_table = killed
sys.argv = ["aclbuild", *sys.argv[1:]]
main()
"""


def test_a_resumed_generate_removes_what_a_killed_one_left(cli, tmp_path):
    out = tmp_path / "labels"
    command = ["generate", "digits", "--labeler", "synthetic", "--limit", "30", "-o", str(out)]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_GENERATE_OUTPUT, *command], env=quiet_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [n for n in hidden(out) if n.startswith(".labels.parquet.")], hidden(out)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    (parts / f".part-00000000-0123456789ab.json.{DEAD_PID}.aclbuild.tmp").write_text("[{")  # a killed part write
    (out / f".run.json.{DEAD_PID}.aclbuild.tmp").write_text("{")
    result = cli(*command, "--resume")
    assert result.exit_code == 0, result.output
    assert hidden(out) == [] and not parts.exists()
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.parquet", "run.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_a_built_repository_folder_has_the_users_umask(cli, tmp_path, labels_pkl, umask, mode):
    before = os.umask(umask)
    try:
        result = cli("build", labels_pkl, "-d", "aclcifar10", "-o", tmp_path / "repo")
    finally:
        os.umask(before)
    assert result.exit_code == 0, result.output
    folders = [tmp_path / "repo", tmp_path / "repo" / "data", tmp_path / "repo" / "figures"]
    assert [oct(p.stat().st_mode & 0o777) for p in folders] == [oct(mode)] * 3


# ---------------------------------------------------------------- §3 a file, a path under a file, a read-only folder


def _verb_args(verb: str, tmp_path: Path, out: Path) -> list:
    if verb == "build":
        pkl = write_pickle(tmp_path / "labels.pkl", make_legacy_dict(n=8))
        return ["build", pkl, "-d", "aclcifar10", "-o", out]
    if verb == "generate":
        return ["generate", "digits", "--labeler", "synthetic", "--limit", "10", "-o", out]
    if verb == "benchmark":
        return ["benchmark", "org/not-fetched", "-s", "FWD", "--model", "mlp", "--epochs", "1", "-o", out]
    if verb == "export":
        return ["export", "REPO", "-o", out]
    return ["quickstart", "-o", out]


VERBS = ["build", "generate", "benchmark", "quickstart", "export"]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("where", ["onto a file", "under a file"])
def test_an_output_onto_or_under_a_file_is_one_line_exit_2(cli, tmp_path, digits_repo, verb, where):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    out = notes if where == "onto a file" else notes / "out"
    args = [digits_repo if a == "REPO" else a for a in _verb_args(verb, tmp_path, out)]
    for overwrite in ([], ["--overwrite"]) if verb == "build" else ([],):
        result = cli(*args, *overwrite)
        one_error_line(result, "is a file" if where == "onto a file" else f"lies under {notes}, which is a file")
    assert notes.read_text() == "mine\n" and hidden(tmp_path) == []


@pytest.mark.parametrize("verb", ["build", "export", "quickstart"])
def test_an_output_in_a_read_only_folder_is_one_line_exit_2(cli, tmp_path, digits_repo, monkeypatch, verb):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if IS_ROOT:  # root writes anyway: the folder says no as it would to anyone else
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and Path(p) != locked)
    args = [digits_repo if a == "REPO" else a for a in _verb_args(verb, tmp_path, locked / "out")]
    try:
        result = cli(*args)
    finally:
        locked.chmod(0o755)
    one_error_line(result, f"cannot write in {locked}: permission denied")
    assert list(locked.iterdir()) == []


def test_a_write_refused_midway_is_one_line_exit_2_and_leaves_nothing(cli, tmp_path, labels_pkl, monkeypatch):
    """Permissions that change while the build runs (or a root-squashed share): the write itself is refused."""

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", refused)
    out = tmp_path / "out" / "repo"
    result = cli("build", labels_pkl, "-d", "aclcifar10", "-o", out)
    one_error_line(result, f"cannot write in {out.parent}: permission denied")
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("size", ["0", "0.4"])
def test_max_shard_size_zero_is_refused_before_anything_is_written(cli, tmp_path, labels_pkl, size):
    out = tmp_path / "out"
    result = cli("build", labels_pkl, "-d", "aclcifar10", "-o", out, "--max-shard-size", size)
    one_error_line(result, "--max-shard-size must be more than 0 bytes, got 0")
    assert not out.exists() and hidden(tmp_path) == []


# ---------------------------------------------------------------- §3 a full disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("earlier", [False, True], ids=["new output", "--overwrite of an earlier build"])
def test_build_on_a_full_disk_says_how_much_is_needed_exit_1(cli, tmp_path, labels_pkl, monkeypatch, earlier):
    out = tmp_path / "out" / "repo"
    out.parent.mkdir()
    if earlier:
        assert cli("build", labels_pkl, "-d", "aclcifar10", "-o", out).exit_code == 0
    before = tree(out.parent)
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", _no_space)
    result = cli("build", labels_pkl, "-d", "aclcifar10", "-o", out, *(["--overwrite"] if earlier else []))
    line = one_error_line(result, f"no space left on {out.parent}: ", code=1)
    assert "0.1 MB needed" in line and "MB free" in line  # 40 images of 32 x 32 x 3 bytes
    assert tree(out.parent) == before  # the earlier repository whole, no temporary beside it


def test_generate_on_a_full_disk_is_one_line_exit_1_and_leaves_no_part(cli, tmp_path, monkeypatch):
    """A model labeler writes each batch as a part file at once (the synthetic one, alone, keeps rows in memory)."""
    from aclbuild.registry import get_base
    from tests.tiny_clip import write_tiny_clip

    model = write_tiny_clip(tmp_path / "clip", list(get_base("digits").class_names))
    write_bytes = Path.write_bytes

    def full_for_parts(self, data):
        if self.name.startswith(".part-"):
            _no_space()
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_parts)
    out = tmp_path / "labels"
    result = cli("generate", "digits", "--labeler", "clip", "--model", model, "--limit", "4", "--num-workers", "0",
                 "-o", out)  # fmt: skip
    one_error_line(result, f"no space left on {out / 'parts'}: ", code=1)
    assert "MB needed" in result.stderr
    assert not (out / "parts").exists() or list((out / "parts").iterdir()) == []
    assert hidden(out) == []


def test_a_full_disk_anywhere_else_is_one_line_exit_1(cli, digits_repo, tmp_path, monkeypatch):
    """A verb that did not expect a full disk (here: the benchmark writing its curves) still prints one line."""
    import contextlib
    import errno

    from aclbuild.bench import train

    curve = tmp_path / "runs" / "curve.csv"

    @contextlib.contextmanager
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(curve))
        yield

    monkeypatch.setattr(train, "atomic_file", full)
    result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "-o", tmp_path / "runs")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: no space left on the device writing {curve}; free some space and run the command again"
    ]


def test_export_of_a_damaged_shard_names_the_shard_and_the_row(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels, repo = tmp_path / "labels", tmp_path / "repo"
    assert cli("generate", "digits", "--labeler", "synthetic", "--limit", "40", "-o", labels).exit_code == 0
    assert cli("build", labels / "labels.parquet", "-d", "digits-uniform", "-o", repo).exit_code == 0

    shard = sorted((repo / "data").glob("train-*.parquet"))[0]
    table = pq.read_table(shard)
    images = table.column("images").combine_chunks()
    damaged = [dict(cell, bytes=cell["bytes"][:40]) if i == 7 else cell for i, cell in enumerate(images.to_pylist())]
    table = table.set_column(table.schema.get_field_index("images"), "images", pa.array(damaged, images.type))
    pq.write_table(table, shard)
    result = cli("export", repo, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    name = table.column("names")[7].as_py()
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {shard}: row 7 ({name!r}) holds an image that does not decode (") and line.endswith(
        "the shard is damaged: rebuild the repository or download it again"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    shard.write_bytes(b"PAR1 not a parquet file")
    result = cli("export", repo, "-o", tmp_path / "out")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and f"cannot read {shard}" in result.stderr
