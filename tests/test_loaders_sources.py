"""Source readers (CIFAR, TinyImageNet, dispatch) and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from aclbuild.errors import SourceError, UnsafePickleError
from aclbuild.loaders.cifar import read_cifar
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
        with pytest.raises(SourceError, match=rf"base {base.name} needs --source/--test-source pointing at "
                                              rf"{base.archive.filename} \(or pass --download\)"):  # fmt: skip
            read_source_images(base, None, "train")


def test_read_source_images_digits_needs_no_path():
    pytest.importorskip("sklearn")
    records = read_source_images(get_base("digits"), None, "test")
    assert len(records) == 397 and records[0].image.dtype == np.uint8
