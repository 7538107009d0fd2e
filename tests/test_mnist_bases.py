"""Bases mnist, fmnist and kmnist: IDX reading, generate -> build -> validate -> load_dataset, a benchmark run,
--download of the four files, and bad sources refused in one line (exit 2). Every source is a tiny fake."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
from datasets import load_dataset

from aclbuild import registry
from aclbuild.errors import InputError, SourceError, UnknownNameError
from aclbuild.loaders.download import download_archive, file_urls
from aclbuild.loaders.images import read_source_images
from aclbuild.registry import get_base, get_variant
from tests.fakes_mnist import idx_arrays, idx_bytes, idx_file_name, make_idx_folder

NEW_BASES = ("mnist", "fmnist", "kmnist")


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


@pytest.mark.parametrize("gz", [True, False])
def test_reader_gives_the_files_images_labels_and_names(tmp_path, gz):
    folder = make_idx_folder(tmp_path, n_train=12, n_test=5, gz=gz)
    arrays = idx_arrays(12, 5)
    for split in ("train", "test"):
        records = read_source_images(get_base("kmnist"), folder, split)
        images, labels = arrays[split]
        assert [r.name for r in records] == [f"{split}_{i:05d}.png" for i in range(len(labels))]
        assert [r.ord_label for r in records] == labels.tolist()
        got = np.stack([r.image for r in records])
        assert got.dtype == np.uint8 and got.shape == (len(labels), 28, 28, 3)
        np.testing.assert_array_equal(got, _rgb(images))
        assert all(r.cl_labels is None for r in records)
    bare = read_source_images(get_base("kmnist"), folder, "train", pixels=False)
    assert [r.image for r in bare] == [None] * 12 and [r.ord_label for r in bare] == arrays["train"][1].tolist()


def test_reader_finds_torchvision_and_download_layouts(tmp_path):
    make_idx_folder(tmp_path / "tv", torchvision_set="FashionMNIST", gz=False)
    assert len(read_source_images(get_base("fmnist"), tmp_path / "tv", "test")) == 5
    make_idx_folder(tmp_path / "cache" / "mnist")  # what --download leaves in its cache folder
    assert len(read_source_images(get_base("mnist"), tmp_path / "cache", "train")) == 12


def test_registry_and_datasets_table(cli):
    mnist, fmnist, kmnist = (get_base(n) for n in NEW_BASES)
    assert fmnist.class_names[0] == "T-shirt/top" and fmnist.class_names[9] == "Ankle boot"
    assert kmnist.class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert mnist.class_names == tuple("0123456789") and {b.image_size for b in (mnist, fmnist, kmnist)} == {28}
    assert (mnist.license, fmnist.license, kmnist.license) == ("cc-by-sa-3.0", "mit", "cc-by-sa-4.0")
    assert [f.md5 for f in mnist.archive.files][0] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert get_variant("fmnist-strong").pretty_name == "FMNIST-Strong"
    with pytest.raises(UnknownNameError, match="unknown dataset"):  # no human-labelled MNIST set exists
        get_variant("clmnist")
    result = cli("datasets")
    assert result.exit_code == 0
    for name in ("mnist-uniform", "fmnist-noisy", "kmnist-weak", "KMNIST-Strong", "28x28", "cc-by-sa-4.0"):
        assert name in result.stdout


@pytest.mark.parametrize("base,matrix", [("mnist", "uniform"), ("fmnist", "weak"), ("kmnist", "strong")])
def test_generate_build_validate_load(cli, tmp_path, base, matrix):
    src = make_idx_folder(tmp_path / "src", n_train=30, n_test=7, seed=NEW_BASES.index(base))
    images, labels = idx_arrays(30, 7, seed=NEW_BASES.index(base))["train"]
    gen, repo = tmp_path / "gen", tmp_path / "repo"
    result = cli("generate", base, "--source", src, "--labeler", "synthetic", "--matrix", matrix, "-o", gen)
    assert result.exit_code == 0, result.output
    result = cli("build", gen / "labels.parquet", "--dataset", f"{base}-{matrix}", "--source", src, "-o", repo)
    assert result.exit_code == 0, result.output
    assert cli("validate", repo).exit_code == 0
    ds = load_dataset(str(repo))
    train, test = ds["train"], ds["test"]
    assert train.features["ord_labels"].names == list(get_base(base).class_names)
    assert train["names"] == [f"train_{i:05d}.png" for i in range(30)] and len(test) == 7
    assert train["ord_labels"] == labels.tolist()
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in train["images"]]), _rgb(images))
    cls = np.array(train["cl_labels"])
    assert cls.shape == (30, 3) and not (cls == labels[:, None]).any()  # synthetic CLs never equal the true label
    assert all(len(set(row)) == 3 for row in cls.tolist())  # drawn without replacement
    card = (repo / "README.md").read_text()
    assert f"license: {get_base(base).license}" in card and get_base(base).citation.splitlines()[0] in card


def test_benchmark_one_epoch_mlp(cli, tmp_path):
    src = make_idx_folder(tmp_path / "src", n_train=60, n_test=20)
    assert cli("generate", "mnist", "--source", src, "--labeler", "synthetic", "-o", tmp_path / "gen").exit_code == 0
    repo = tmp_path / "repo"
    result = cli("build", tmp_path / "gen" / "labels.parquet", "-d", "mnist-uniform", "--source", src, "-o", repo)
    assert result.exit_code == 0, result.output
    out = tmp_path / "bench"
    result = cli("benchmark", repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "--seed", "1126", "-o", out)
    assert result.exit_code == 0, result.output
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["strategy"] == "FWD" and run["model"] == "mlp" and run["epochs"] == 1
    assert 0.0 <= run["test_accuracy"] <= 1.0 and run["best_epoch"] == 1


def _damage(folder, case: str) -> str:
    """Spoil one file of a fake IDX folder; return what the error line must say."""
    images = folder / idx_file_name("train", "images")
    labels = folder / idx_file_name("train", "labels")
    arrays = idx_arrays()
    if case == "wrong magic":
        labels.write_bytes(gzip.compress(idx_bytes(arrays["train"][1], magic=2051)))
        return "magic number 2051 is not 2049"
    if case == "truncated gzip":
        images.write_bytes(images.read_bytes()[:-40])
        return "not a readable gzip file"
    if case == "truncated pixels":
        images.write_bytes(gzip.compress(idx_bytes(arrays["train"][0])[:-100]))
        return "the file is truncated"
    if case == "missing file":
        labels.unlink()
        return "has no train-labels-idx1-ubyte.gz (nor train-labels-idx1-ubyte)"
    if case == "count mismatch":
        labels.write_bytes(gzip.compress(idx_bytes(arrays["train"][1][:-2])))
        return "holds 12 images but train-labels 10 labels"
    if case == "label out of range":
        labels.write_bytes(gzip.compress(idx_bytes(arrays["train"][1] + 10)))
        return "outside 0..9"
    if case == "not 28x28":
        images.write_bytes(gzip.compress(idx_bytes(arrays["train"][0][:, :20, :20])))
        return "images are 20x20"
    if case == "no folder":
        shutil.rmtree(folder)
        return "does not exist"
    raise AssertionError(case)


BAD = ("wrong magic", "truncated gzip", "truncated pixels", "missing file", "count mismatch", "label out of range",
       "not 28x28", "no folder")  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_sources_are_one_line_exit_2(cli, tmp_path, case):
    folder = make_idx_folder(tmp_path / "src")
    expect = _damage(folder, case)
    out = tmp_path / "gen"
    result = cli("generate", "mnist", "--source", folder, "--labeler", "synthetic", "-o", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], result.stderr
    assert not out.exists()


def test_a_file_or_an_empty_folder_is_refused(tmp_path):
    folder = make_idx_folder(tmp_path / "src")
    with pytest.raises(SourceError, match="is a file; point it at the folder holding MNIST's four"):
        read_source_images(get_base("mnist"), folder / idx_file_name("train", "images"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no train-images-idx3-ubyte"):
        read_source_images(get_base("mnist"), tmp_path / "empty", "train")
    with pytest.raises(SourceError, match="pointing at the MNIST IDX folder"):
        read_source_images(get_base("mnist"), None, "train")


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (url, www folder, request paths)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    www, requests = tmp_path / "www", []
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_download_fetches_the_four_files_through_the_mirror(cli, tmp_path, monkeypatch, file_server):
    url, www, requests = file_server
    make_idx_folder(www / "mirror" / "fmnist")
    monkeypatch.setenv("ACLBUILD_MIRROR", f"{url}/mirror/")
    cache = tmp_path / "cache"
    assert [u for _, u in file_urls(get_base("fmnist").archive)][2] == f"{url}/mirror/fmnist/t10k-images-idx3-ubyte.gz"

    # The official MD5s do not match the fakes: refused, exit 1, nothing left that looks complete.
    result = cli("generate", "fmnist", "--download", "--cache-dir", cache, "--labeler", "synthetic", "-o", tmp_path / "a")
    assert result.exit_code == 1 and "checksum mismatch" in result.stderr
    assert list((cache / "fmnist").iterdir()) == []

    # With the fakes' own MD5s registered, all four arrive and feed generate; a second run reuses the cache.
    files = get_base("fmnist").archive
    fake_md5 = {f.filename: hashlib.md5((www / "mirror" / "fmnist" / f.filename).read_bytes()).hexdigest()
                for f in files.files}  # fmt: skip
    patched = dataclasses.replace(
        files, files=tuple(dataclasses.replace(f, md5=fake_md5[f.filename]) for f in files.files)
    )
    monkeypatch.setitem(registry.BASES, "fmnist", dataclasses.replace(registry.BASES["fmnist"], archive=patched))
    for out in ("b", "c"):
        args = ("generate", "fmnist", "--download", "--cache-dir", cache, "--labeler", "synthetic", "-o", tmp_path / out)
        result = cli(*args)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (cache / "fmnist").iterdir()) == sorted(fake_md5)
    assert len(requests) == 1 + 4  # the refused run stopped at its first file; the third run found all four cached
    assert sorted(set(requests)) == sorted(f"/mirror/fmnist/{name}" for name in fake_md5)
    with pytest.raises(InputError, match="each with its own MD5"):
        download_archive(registry.BASES["fmnist"], cache, md5="0" * 32)
