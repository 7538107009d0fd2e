"""Source readers (CIFAR, TinyImageNet, dispatch), the restricted unpickler and the archive download."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import socket
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from aclbuild.errors import DownloadError, SourceError, UnsafePickleError
from aclbuild.loaders.cifar import read_cifar
from aclbuild.loaders.download import download_archive
from aclbuild.loaders.images import read_source_images
from aclbuild.loaders.safe_pickle import safe_load
from aclbuild.loaders.tinyimagenet import read_tinyimagenet
from aclbuild.registry import BASES, get_base
from tests.fakes import (
    CIFAR10_FOLDER,
    CIFAR10_TRAIN,
    EXTRA_WNID,
    JPEG_TOLERANCE,
    cifar10_batches,
    cifar100_batches,
    cifar_images,
    make_cifar10_archive,
    make_cifar100_archive,
    make_tinyimagenet,
    py2_pickle,
    tiny_is_greyscale,
    tiny_pixel,
    tiny_wnids,
    write_cifar_archive,
)

CIFAR10, CIFAR20, MIN10, MIN20 = (BASES[n] for n in ("cifar10", "cifar20", "min10", "min20"))


def expected_cifar10(split: str, n_per_batch: int = 4):
    batches = cifar10_batches(n_per_batch)
    members = CIFAR10_TRAIN if split == "train" else ("test_batch",)
    names = [n.decode() for m in members for n in batches[m][b"filenames"]]
    labels = [y for m in members for y in batches[m][b"labels"]]
    images = np.concatenate([cifar_images(batches[m]) for m in members])
    return names, labels, images


def assert_records(records, names, labels, images):
    assert [r.name for r in records] == names
    assert [r.ord_label for r in records] == labels
    assert all(r.cl_labels is None for r in records)
    got = np.stack([r.image for r in records])
    assert got.dtype == np.uint8 and got.shape == images.shape
    np.testing.assert_array_equal(got, images)
    assert all(r.image.flags.c_contiguous for r in records)


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("form", ["archive", "archive_folder", "batch_folder", "parent_folder"])
def test_cifar10_order_names_labels_pixels(tmp_path, split, form):
    built = make_cifar10_archive(tmp_path, n_per_batch=4, as_folder=form in ("batch_folder", "parent_folder"))
    path = built.parent if form in ("archive_folder", "parent_folder") else built
    records = read_cifar(path, CIFAR10, split)
    assert len(records) == (20 if split == "train" else 4)
    assert_records(records, *expected_cifar10(split))
    if split == "train":  # data_batch_1..5 in order
        assert records[0].name == "airplane_s_000000.png" and records[4].name.endswith("_s_000004.png")


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("as_folder", [False, True])
def test_cifar20_uses_coarse_labels(tmp_path, split, as_folder):
    path = make_cifar100_archive(tmp_path, n_train=8, n_test=4, as_folder=as_folder)
    batch = cifar100_batches(8, 4)[split]
    records = read_cifar(path, CIFAR20, split)
    names = [n.decode() for n in batch[b"filenames"]]
    assert_records(records, names, batch[b"coarse_labels"], cifar_images(batch))
    assert [r.ord_label for r in records] != batch[b"fine_labels"]


@pytest.mark.parametrize("as_folder", [False, True])
def test_cifar_python2_pickles(tmp_path, as_folder):
    """Real CIFAR batches were pickled by Python 2: str keys and names under latin1, numpy.core globals."""
    members = {name: py2_pickle(batch) for name, batch in cifar10_batches(2).items()}
    assert b"cnumpy.core.multiarray\n_reconstruct" in members["test_batch"]
    path = write_cifar_archive(tmp_path, CIFAR10_FOLDER, members, as_folder=as_folder)
    assert_records(read_cifar(path, CIFAR10, "train"), *expected_cifar10("train", 2))


def test_cifar_wrong_base(tmp_path):
    c100 = make_cifar100_archive(tmp_path / "a")
    with pytest.raises(SourceError, match=r"CIFAR-100 archive.*needs cifar-10-python\.tar\.gz"):
        read_cifar(c100, CIFAR10, "train")
    c10_folder = make_cifar10_archive(tmp_path / "b", as_folder=True)
    with pytest.raises(SourceError, match=r"CIFAR-10 archive.*needs cifar-100-python\.tar\.gz"):
        read_cifar(c10_folder, CIFAR20, "test")
    with pytest.raises(SourceError, match="not min10"):
        read_cifar(c100, MIN10, "train")


def test_cifar_corrupt_truncated_missing(tmp_path):
    archive = make_cifar10_archive(tmp_path)
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not a tar file at all" * 20)
    for bad in (truncated, garbage):
        with pytest.raises(SourceError, match="not a readable cifar-10-python.tar.gz") as err:
            read_cifar(bad, CIFAR10, "train")
        assert "\n" not in str(err.value)
    members = cifar10_batches()
    del members["data_batch_3"]
    with pytest.raises(SourceError, match="no cifar-10-batches-py/data_batch_3"):
        read_cifar(write_cifar_archive(tmp_path / "m", CIFAR10_FOLDER, members), CIFAR10, "train")
    with pytest.raises(SourceError, match="has no data_batch_3"):
        read_cifar(write_cifar_archive(tmp_path / "f", CIFAR10_FOLDER, members, as_folder=True), CIFAR10, "train")
    with pytest.raises(SourceError, match="does not exist"):
        read_cifar(tmp_path / "nowhere.tar.gz", CIFAR10, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no cifar-10-batches-py/"):
        read_cifar(tmp_path / "empty", CIFAR10, "train")


def test_cifar_corrupt_member_pickle(tmp_path):
    members = cifar10_batches()
    blob = pickle.dumps(members["test_batch"], protocol=2)
    members["test_batch"] = blob[: len(blob) // 3]
    path = write_cifar_archive(tmp_path, CIFAR10_FOLDER, members)
    with pytest.raises(SourceError, match="test_batch is not a readable pickle"):
        read_cifar(path, CIFAR10, "test")
    members["test_batch"] = pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1],
                                          b"filenames": [b"a", b"b"]}, protocol=2)  # fmt: skip
    with pytest.raises(SourceError, match="N x 3072 uint8"):
        read_cifar(write_cifar_archive(tmp_path / "s", CIFAR10_FOLDER, members), CIFAR10, "test")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("as_folder", [False, True])
def test_cifar_malicious_pickle_is_refused_and_never_runs(tmp_path, as_folder):
    marker = tmp_path / "pwned"
    members = cifar10_batches()
    members["data_batch_2"] = pickle.dumps({b"data": _Payload(marker)}, protocol=2)
    path = write_cifar_archive(tmp_path / "arch", CIFAR10_FOLDER, members, as_folder=as_folder)
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|nt|os)\.system") as err:
        read_cifar(path, CIFAR10, "train")
    assert "data_batch_2" in str(err.value)
    assert not marker.exists()


# ---------------------------------------------------------------- safe_pickle


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_load_round_trips_numpy_and_containers(protocol):
    data = {
        b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": np.array([1, 2], np.int64),
        "scalar": np.int64(7), "empty": b"", "set": {1, 2}, "f": np.float32([0.5]), "t": (1, "a", None),
    }  # fmt: skip
    out = safe_load(pickle.dumps(data, protocol=protocol), "mem")
    np.testing.assert_array_equal(out[b"data"], data[b"data"])
    assert out[b"data"].dtype == np.uint8 and out["labels"].dtype == np.int64
    assert out["scalar"] == 7 and out["empty"] == b"" and out["set"] == {1, 2} and out["t"] == (1, "a", None)


def test_safe_load_file_object_and_errors(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2]))
    with path.open("rb") as f:
        assert safe_load(f, str(path)) == [1, 2]
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        safe_load(b"cbuiltins\neval\n(S'1'\ntR.", "evil.pkl")
    with pytest.raises(UnsafePickleError, match=r"collections\.OrderedDict"):
        safe_load(pickle.dumps(__import__("collections").OrderedDict(a=1)), "od.pkl")
    with pytest.raises(UnsafePickleError, match="encoding"):
        safe_load(b"c_codecs\nencode\n(Vx\nVzlib_codec\ntR.", "codec.pkl")
    for bad in (b"", pickle.dumps({"a": [1, 2, 3]})[:-4], b"\x80\x05garbage"):
        with pytest.raises(SourceError, match="mem is not a readable pickle"):
            safe_load(bad, "mem")


# ---------------------------------------------------------------- TinyImageNet


def check_pixels(records, greyscale_some=True):
    for r in records:
        assert r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8
        diff = np.abs(r.image.astype(int) - np.array(tiny_pixel(r.name, greyscale_some)))
        assert diff.max() <= JPEG_TOLERANCE, r.name


def test_tinyimagenet_train_order_is_string_sorted(tmp_path):
    root = make_tinyimagenet(tmp_path, bases=("min10",), n_train=12, n_val=1)
    records = read_tinyimagenet(root, MIN10, "train")
    assert len(records) == 120
    first = MIN10.wnids[0]
    order = [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [r.name for r in records[:12]] == [f"{first}_{i}.JPEG" for i in order]
    assert [r.ord_label for r in records] == [y for y in range(10) for _ in range(12)]
    assert [r.name.split("_")[0] for r in records[::12]] == list(MIN10.wnids)
    check_pixels(records)


def test_tinyimagenet_greyscale_becomes_rgb(tmp_path):
    root = make_tinyimagenet(tmp_path, n_train=3, n_val=1)
    name = f"{MIN10.wnids[0]}_1.JPEG"
    with Image.open(root / "train" / MIN10.wnids[0] / "images" / name) as im:
        assert im.mode == "L"  # the fixture really wrote a greyscale JPEG
    records = {r.name: r for r in read_tinyimagenet(root, MIN10, "train")}
    grey = records[name].image
    assert tiny_is_greyscale(name) and grey.shape == (64, 64, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    colour = records[f"{MIN10.wnids[0]}_0.JPEG"].image
    assert len(set(colour[0, 0].tolist())) > 1


def test_tinyimagenet_test_split_filters_and_orders_val(tmp_path):
    root = make_tinyimagenet(tmp_path, bases=("min10",), n_val=3)
    records = read_tinyimagenet(root, MIN10, "test")
    wnids = tiny_wnids(["min10"])
    owner = {f"val_{k}.JPEG": wnids[k % len(wnids)] for k in range(3 * len(wnids))}
    expected = sorted((w, n) for n, w in owner.items() if w != EXTRA_WNID)
    assert [r.name for r in records] == [n for _, n in expected]
    assert [r.ord_label for r in records] == [MIN10.wnids.index(w) for w, _ in expected]
    assert len(records) == 30 and all(owner[r.name] != EXTRA_WNID for r in records)
    by_label = [r.name for r in records if r.ord_label == 2]
    assert by_label == sorted(by_label) and by_label == ["val_14.JPEG", "val_25.JPEG", "val_3.JPEG"]  # strings
    check_pixels(records)


@pytest.mark.parametrize("split", ["train", "test"])
def test_tinyimagenet_zip_folder_and_parent_agree(tmp_path, split):
    root = make_tinyimagenet(tmp_path / "dir", bases=("min10", "min20"))
    archive = make_tinyimagenet(tmp_path / "zip", bases=("min10", "min20"), as_zip=True)
    for base in (MIN10, MIN20):
        from_dir = read_tinyimagenet(root, base, split)
        for other_path in (archive, archive.parent, root.parent):
            other = read_tinyimagenet(other_path, base, split)
            assert [r.name for r in other] == [r.name for r in from_dir]
            assert [r.ord_label for r in other] == [r.ord_label for r in from_dir]
            np.testing.assert_array_equal(np.stack([r.image for r in other]), np.stack([r.image for r in from_dir]))
    torch = [r for r in read_tinyimagenet(archive, MIN20, "train") if r.name.startswith("n04456115")]
    assert {r.ord_label for r in torch} == {MIN20.wnids.index("n04456115")} == {17}


def test_tinyimagenet_errors(tmp_path):
    root = make_tinyimagenet(tmp_path / "t", bases=("min10",))
    with pytest.raises(SourceError, match=r"no train/n01644900/images/ folder, which base min20 needs"):
        read_tinyimagenet(root, MIN20, "train")
    with pytest.raises(SourceError, match="lists no image of wnid n01644900"):
        read_tinyimagenet(root, MIN20, "test")
    archive = make_tinyimagenet(tmp_path / "z", as_zip=True)
    data = archive.read_bytes()
    (tmp_path / "trunc.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="not a readable tiny-imagenet-200.zip"):
        read_tinyimagenet(tmp_path / "trunc.zip", MIN10, "train")
    with pytest.raises(SourceError, match="not a readable tiny-imagenet-200.zip"):
        read_tinyimagenet(make_cifar10_archive(tmp_path / "c"), MIN10, "train")
    with pytest.raises(SourceError, match="holds no tiny-imagenet-200/"):
        read_tinyimagenet(tmp_path / "c", MIN10, "train")
    with pytest.raises(SourceError, match="not cifar10"):
        read_tinyimagenet(root, CIFAR10, "train")
    bad = root / "train" / MIN10.wnids[3] / "images" / f"{MIN10.wnids[3]}_2.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(SourceError, match=rf"{MIN10.wnids[3]}_2.JPEG is not a readable image") as err:
        read_tinyimagenet(root, MIN10, "train")
    assert "\n" not in str(err.value)
    Image.new("RGB", (32, 32)).save(bad, "JPEG")
    with pytest.raises(SourceError, match="is 32x32, expected 64x64"):
        read_tinyimagenet(root, MIN10, "train")


def test_tinyimagenet_corrupt_zip_member(tmp_path):
    archive = make_tinyimagenet(tmp_path, as_zip=True)
    member = "tiny-imagenet-200/val/images/val_1.JPEG"  # wnid index 1 of the sorted 11: min10's first
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 5 : start + 40] = bytes(35)  # damage the stored data; the CRC check must notice
    archive.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="val_1.JPEG"):
        read_tinyimagenet(archive, MIN10, "test")


# ---------------------------------------------------------------- dispatch


def test_read_source_images_dispatch(tmp_path):
    c10 = make_cifar10_archive(tmp_path / "c10")
    assert [r.name for r in read_source_images(CIFAR10, c10, "test")] == expected_cifar10("test")[0]
    c100 = make_cifar100_archive(tmp_path / "c100")
    assert len(read_source_images(get_base("cifar20"), str(c100), "train")) == 8
    tiny = make_tinyimagenet(tmp_path / "t", as_zip=True)
    assert len(read_source_images(MIN10, tiny, "test")) == 20
    for base in (CIFAR10, MIN20):
        with pytest.raises(SourceError, match=rf"base {base.name} needs --images/--test-source pointing at "
                                              rf"{base.archive.filename} \(or pass --download\)"):  # fmt: skip
            read_source_images(base, None, "train")


def test_read_source_images_digits_needs_no_path():
    pytest.importorskip("sklearn")
    records = read_source_images(get_base("digits"), None, "test")
    assert len(records) == 397 and records[0].image.dtype == np.uint8


# ---------------------------------------------------------------- download


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving ``files`` (path -> bytes) and recording each request path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.path)
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv("ACLBUILD_MIRROR", raising=False)
    srv = _Server()
    yield srv
    srv.close()


def test_download_then_cached(server, tmp_path):
    body = os.urandom(3 << 20)  # several chunks
    server.files["/files/cifar-10-python.tar.gz"] = body
    md5 = hashlib.md5(body).hexdigest()
    cache = tmp_path / "cache"
    path = download_archive(CIFAR10, cache, url=f"{server.url}/files/cifar-10-python.tar.gz", md5=md5)
    assert path == cache / "cifar-10-python.tar.gz" and path.read_bytes() == body
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-python.tar.gz"]
    assert len(server.requests) == 1
    again = download_archive(CIFAR10, cache, url=f"{server.url}/files/cifar-10-python.tar.gz", md5=md5.upper())
    assert again == path and len(server.requests) == 1  # cached: no second request


def test_download_uses_mirror_and_replaces_a_stale_file(server, tmp_path, monkeypatch):
    body = gzip.compress(b"tiny")
    server.files["/mirror/tiny-imagenet-200.zip"] = body
    monkeypatch.setenv("ACLBUILD_MIRROR", f"{server.url}/mirror/")
    (tmp_path / "tiny-imagenet-200.zip").write_bytes(b"stale")
    path = download_archive(MIN10, tmp_path, md5=hashlib.md5(body).hexdigest())
    assert path.read_bytes() == body and server.requests == ["/mirror/tiny-imagenet-200.zip"]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/c.tgz"] = b"not the real archive"
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"checksum mismatch: expected 0{32}, got [0-9a-f]{32}; the download is "
                                            r"corrupt or the mirror is wrong; delete .* and retry"):  # fmt: skip
        download_archive(CIFAR10, cache, url=f"{server.url}/c.tgz", md5="0" * 32)
    assert list(cache.iterdir()) == []


def test_download_network_errors(server, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download") as err:
        download_archive(CIFAR10, tmp_path, url=f"http://127.0.0.1:{dead}/x.tar.gz", md5="0" * 32)
    assert "\n" not in str(err.value)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_archive(CIFAR10, tmp_path, url=f"{server.url}/missing.tar.gz")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SourceError, match="embedded"):
        download_archive(get_base("digits"), tmp_path)


def test_build_download_through_mirror(cli, server, tmp_path, monkeypatch, legacy_pickle):
    """`aclbuild build --download`: fetched from $ACLBUILD_MIRROR, MD5-checked, used for the test split."""
    import dataclasses

    from datasets import load_dataset

    from aclbuild import registry
    from tests.fakes import make_cifar10_archive

    archive = make_cifar10_archive(tmp_path / "src", n_per_batch=2, n_test=3)
    server.files["/mirror/cifar-10-python.tar.gz"] = archive.read_bytes()
    monkeypatch.setenv("ACLBUILD_MIRROR", f"{server.url}/mirror")
    cache, out = tmp_path / "cache", tmp_path / "repo"

    # The official MD5 does not match the fake archive: refused, exit 1, nothing cached, nothing built.
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--download", "--cache-dir", cache, "-o", out)
    assert result.exit_code == 1 and "checksum mismatch" in result.stderr
    assert not out.exists() and list(cache.iterdir()) == []

    # With the fake archive's own MD5 registered, the download is accepted and feeds the test split.
    base = dataclasses.replace(
        registry.BASES["cifar10"],
        archive=dataclasses.replace(registry.CIFAR10_ARCHIVE, md5=hashlib.md5(archive.read_bytes()).hexdigest()),
    )
    monkeypatch.setitem(registry.VARIANTS, "aclcifar10", dataclasses.replace(registry.VARIANTS["aclcifar10"], base=base))
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--download", "--cache-dir", cache, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(load_dataset(str(out), split="test")) == 3
    assert server.requests.count("/mirror/cifar-10-python.tar.gz") == 2
