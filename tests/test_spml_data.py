"""Single-positive multi-label data (issue 16 §1): the four readers on tiny fakes in their official formats, the
observed labels and validation split as the SPML benchmark draws them, and the SPML record's schema."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aclbuild.errors import SourceError
from aclbuild.loaders.coco import read_coco
from aclbuild.loaders.cub import read_cub
from aclbuild.loaders.nuswide import NUSWIDE_CLASSES, read_nuswide
from aclbuild.loaders.observed import SEED, draw_observed, spml_splits, validation_split
from aclbuild.loaders.spml_source import SpmlPart, SpmlRecords
from aclbuild.loaders.voc import VOC_CLASSES, read_voc
from aclbuild.schema import SpmlRecord, SpmlSchema

JPEG_TOLERANCE = 6


def colour(name: str) -> tuple[int, int, int]:
    """A solid colour per file name, so a test can tell which image a record decoded."""
    value = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    return (value * 37 % 200 + 20, value * 71 % 200 + 20, value * 13 % 200 + 20)


def jpeg(name: str, size: tuple[int, int] = (12, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour(name)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_tree(files: dict[str, bytes], target: Path) -> Path:
    """``files`` (path -> bytes) as a folder, ``.tar``, ``.tgz`` or ``.zip`` at ``target``, by its suffix."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix in (".tar", ".tgz"):
        with tarfile.open(target, "w:gz" if target.suffix == ".tgz" else "w") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    elif target.suffix == ".zip":
        with zipfile.ZipFile(target, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        for name, data in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    return target


def assert_pixels(record, name: str) -> None:
    image = record.image
    assert image.dtype == np.uint8 and image.shape == (8, 12, 3)
    assert np.abs(image.astype(int) - colour(name)).max() <= JPEG_TOLERANCE


# --- Pascal VOC 2012 ------------------------------------------------------------------------------------------------

VOC_PREFIX = "VOCdevkit/VOC2012/"
# train: 2008_000002 is cat + dog, 2008_000010 is person (and a difficult cat: not a positive), 2008_000005 has only
# -1 and 0 entries: the benchmark leaves it out. val: 2009_000001 is a train.
VOC_TRAIN = {"2008_000010": {"person": 1, "cat": 0}, "2008_000002": {"cat": 1, "dog": 1}, "2008_000005": {"cow": 0}}
VOC_VAL = {"2009_000001": {"train": 1}}


def voc_files(parts=(("train", VOC_TRAIN), ("val", VOC_VAL))) -> dict[str, bytes]:
    files = {}
    for part, flags in parts:
        for name in VOC_CLASSES:
            lines = [f"{image} {flags[image].get(name, -1):2d}" for image in flags]  # the official "id  1" spacing
            files[f"{VOC_PREFIX}ImageSets/Main/{name}_{part}.txt"] = ("\n".join(lines) + "\n").encode()
        for image in flags:
            files[f"{VOC_PREFIX}JPEGImages/{image}.jpg"] = jpeg(image)
    return files


@pytest.mark.parametrize("form", ["VOCtrainval_11-May-2012.tar", "folder"])
def test_voc_reads_the_class_files_as_the_benchmark(tmp_path, form):
    target = tmp_path / form
    if form == "folder":
        target.mkdir()
    part = read_voc(write_tree(voc_files(), target), "train")
    assert part.class_names == VOC_CLASSES and len(VOC_CLASSES) == 20
    records = SpmlRecords(part)
    assert [(r.name, r.labels) for r in records] == [
        ("2008_000002.jpg", (VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog"))),
        ("2008_000010.jpg", (VOC_CLASSES.index("person"),)),
    ]
    assert_pixels(records[1], "2008_000010")
    test = read_voc(target, "val")
    assert [(r.name, r.labels) for r in SpmlRecords(test)] == [("2009_000001.jpg", (VOC_CLASSES.index("train"),))]


def test_voc_bad_inputs_are_one_line(tmp_path):
    files = voc_files()
    files[f"{VOC_PREFIX}ImageSets/Main/dog_train.txt"] = b"2008_000002 maybe\n"
    with pytest.raises(SourceError, match=r"dog_train.txt line 1 is not") as caught:
        read_voc(write_tree(files, tmp_path / "bad.tar"), "train")
    files = voc_files()
    del files[f"{VOC_PREFIX}JPEGImages/2008_000010.jpg"]
    with pytest.raises(SourceError, match=r"no VOCdevkit/VOC2012/JPEGImages/2008_000010.jpg"):
        read_voc(write_tree(files, tmp_path / "nojpeg.tar"), "train")
    with pytest.raises(SourceError, match=r"holds no ImageSets/Main/aeroplane_train.txt"):
        read_voc(write_tree({"README": b"x"}, tmp_path / "other.tar"), "train")
    with pytest.raises(SourceError, match=r"missing.tar does not exist; pass VOCtrainval_11-May-2012.tar"):
        read_voc(tmp_path / "missing.tar", "train")
    (tmp_path / "garbage.tar").write_bytes(b"not an archive at all")
    with pytest.raises(SourceError, match=r"garbage.tar is neither a folder, a tar nor a zip"):
        read_voc(tmp_path / "garbage.tar", "train")
    assert "\n" not in str(caught.value)
    files = voc_files()
    files[f"{VOC_PREFIX}JPEGImages/2008_000010.jpg"] = b"\xff\xd8 truncated"
    records = SpmlRecords(read_voc(write_tree(files, tmp_path / "corrupt.tar"), "train"))
    with pytest.raises(SourceError, match=r"corrupt.tar:VOCdevkit/VOC2012/JPEGImages/2008_000010.jpg is not a"):
        records[1].image


# --- MS-COCO 2014 ---------------------------------------------------------------------------------------------------

COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]


def coco_instances(part: str) -> dict:
    # image 100 has no annotation: the benchmark leaves it out; ids sort as text: "25" < "31" < "9"
    images = [{"id": i, "file_name": f"COCO_{part}2014_{i:012d}.jpg"} for i in (9, 25, 31, 100)]
    annotations = [(9, 90), (25, 1), (9, 1), (31, 3), (25, 1)]
    return {"images": images, "categories": COCO_CATEGORIES,
            "annotations": [{"id": k, "image_id": i, "category_id": c, "iscrowd": 0}
                            for k, (i, c) in enumerate(annotations)]}  # fmt: skip


def coco_images(part: str) -> dict[str, bytes]:
    return {f"{part}2014/COCO_{part}2014_{i:012d}.jpg": jpeg(str(i)) for i in (9, 25, 31, 100)}


def test_coco_reads_annotated_images_in_the_benchmark_order(tmp_path):
    write_tree(coco_images("train"), tmp_path / "train2014.zip")
    instances = json.dumps(coco_instances("train")).encode()
    write_tree({"annotations/instances_train2014.json": instances}, tmp_path / "annotations_trainval2014.zip")
    part = read_coco(tmp_path / "train2014.zip", "train")
    assert part.class_names == ("person", "car", "toothbrush")
    records = SpmlRecords(part)
    assert [(r.name, r.labels) for r in records] == [
        ("train2014/COCO_train2014_000000000025.jpg", (0,)),
        ("train2014/COCO_train2014_000000000031.jpg", (1,)),
        ("train2014/COCO_train2014_000000000009.jpg", (0, 2)),
    ]
    assert_pixels(records[2], "9")
    # the extracted folder and a plain json give the same
    write_tree(coco_images("val"), tmp_path)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "instances_val2014.json").write_text(json.dumps(coco_instances("val")))
    val = read_coco(tmp_path / "val2014", "val", tmp_path / "ann" / "instances_val2014.json")
    assert val.names[0] == "val2014/COCO_val2014_000000000025.jpg" and val.labels.tolist() == part.labels.tolist()
    assert_pixels(SpmlRecords(val)[0], "25")


def test_coco_bad_inputs_are_one_line(tmp_path):
    write_tree(coco_images("train"), tmp_path / "train2014.zip")
    (tmp_path / "instances_train2014.json").write_text('{"categories": [')
    with pytest.raises(SourceError, match=r"instances_train2014.json is not valid JSON"):
        read_coco(tmp_path / "train2014.zip", "train")
    broken = coco_instances("train")
    broken["annotations"].append({"image_id": 9, "category_id": 7})
    (tmp_path / "instances_train2014.json").write_text(json.dumps(broken))
    with pytest.raises(SourceError, match=r"category_id 7, which its categories do not list"):
        read_coco(tmp_path / "train2014.zip", "train")
    (tmp_path / "instances_train2014.json").write_text(json.dumps(coco_instances("train")))
    write_tree({"train2014/COCO_train2014_000000000009.jpg": jpeg("9")}, tmp_path / "train2014.zip")
    with pytest.raises(SourceError, match=r"no train2014/COCO_train2014_000000000025.jpg, which .* annotates"):
        read_coco(tmp_path / "train2014.zip", "train")


# --- CUB-200-2011 ---------------------------------------------------------------------------------------------------

CUB_IMAGES = ["001.Albatross/Albatross_0001.jpg", "001.Albatross/Albatross_0002.jpg", "002.Auklet/Auklet_0001.jpg",
              "002.Auklet/Auklet_0002.jpg"]  # fmt: skip
CUB_ATTRIBUTES = ["has_bill_shape::curved_(up_or_down)", "has_wing_color::blue", "has_size::small_(5_-_9_in)"]
CUB_PRESENT = [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]]  # image 2 shows no attribute
CUB_IS_TRAIN = [1, 1, 0, 1]


def cub_files(attribute_lines: list[str] | None = None) -> dict[str, bytes]:
    lines = attribute_lines or [f"{i + 1} {a + 1} {CUB_PRESENT[i][a]} 3 12.5" for i in range(4) for a in range(3)]
    files = {
        "attributes.txt": "".join(f"{a + 1} {n}\n" for a, n in enumerate(CUB_ATTRIBUTES)).encode(),
        "CUB_200_2011/images.txt": "".join(f"{i + 1} {p}\n" for i, p in enumerate(CUB_IMAGES)).encode(),
        "CUB_200_2011/train_test_split.txt": "".join(f"{i + 1} {t}\n" for i, t in enumerate(CUB_IS_TRAIN)).encode(),
        "CUB_200_2011/attributes/image_attribute_labels.txt": ("\n".join(lines) + "\n").encode(),
    }
    files.update({f"CUB_200_2011/images/{p}": jpeg(p) for p in CUB_IMAGES})
    return files


def test_cub_reads_attributes_as_targets(tmp_path):
    part = read_cub(write_tree(cub_files(), tmp_path / "CUB_200_2011.tgz"), "train")
    assert part.class_names == tuple(CUB_ATTRIBUTES)
    records = SpmlRecords(part)
    assert [(r.name, r.labels) for r in records] == [(CUB_IMAGES[0], (0, 2)), (CUB_IMAGES[1], ()),
                                                     (CUB_IMAGES[3], (0, 1, 2))]  # fmt: skip
    assert_pixels(records[2], CUB_IMAGES[3])
    test = read_cub(tmp_path / "CUB_200_2011.tgz", "test")
    assert test.names == [CUB_IMAGES[2]] and test.labels.tolist() == [[0, 1, 0]]


def test_cub_bad_inputs_are_one_line(tmp_path):
    short = [f"{i + 1} {a + 1} 1 3 1.0" for i in range(4) for a in range(3)][:-1]
    with pytest.raises(SourceError, match=r"image_attribute_labels.txt gives no value of attribute 3 for image 4"):
        read_cub(write_tree(cub_files(short), tmp_path / "short.tgz"), "train")
    with pytest.raises(SourceError, match=r"image_attribute_labels.txt line 1 is not"):
        read_cub(write_tree(cub_files(["one 1 1 3 1.0"]), tmp_path / "bad.tgz"), "train")
    files = cub_files()
    del files["attributes.txt"]
    with pytest.raises(SourceError, match=r"has no attributes.txt"):
        read_cub(write_tree(files, tmp_path / "noattr.tgz"), "train")


# --- NUS-WIDE (VLPL's formatted files) ------------------------------------------------------------------------------

NUS_PATHS = ["actor/0001_2124494179.jpg", "airport/0002_174174086.jpg", "beach/0003_362.jpg"]


def nus_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "nuswide"
    labels = np.zeros((3, 81))
    labels[0, [0, 2]] = 1.0  # airport, beach
    labels[2, 80] = 1.0  # zebra; row 1 has no positive
    for part in ("train", "val"):
        write_tree({f"Flickr/{p}": jpeg(p) for p in NUS_PATHS}, folder)
        np.save(folder / f"formatted_{part}_images.npy", np.array(NUS_PATHS))
        np.save(folder / f"formatted_{part}_labels.npy", labels)
    return folder


def test_nuswide_reads_vlpl_formatted_files(tmp_path):
    part = read_nuswide(nus_folder(tmp_path), "train")
    assert part.class_names == NUSWIDE_CLASSES and len(NUSWIDE_CLASSES) == 81
    records = SpmlRecords(part)
    assert [(r.name, r.labels) for r in records] == [(NUS_PATHS[0], (0, 2)), (NUS_PATHS[1], ()), (NUS_PATHS[2], (80,))]
    assert_pixels(records[1], NUS_PATHS[1])
    observed = [r.observed_label for r in SpmlRecords(part, draw_observed(part.labels))]
    assert observed[1] is None and observed[2] == 80 and observed[0] in (0, 2)  # no positive: no observed label
    assert read_nuswide(tmp_path / "nuswide", "val", images=False).tree is None


def test_nuswide_bad_inputs_are_one_line(tmp_path):
    folder = nus_folder(tmp_path)
    np.save(folder / "formatted_train_images.npy", np.array(NUS_PATHS, dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match=r"formatted_train_images.npy holds Python objects"):
        read_nuswide(folder, "train")
    np.save(folder / "formatted_train_images.npy", np.array(NUS_PATHS))
    np.save(folder / "formatted_train_labels.npy", np.full((3, 81), 2.0))
    with pytest.raises(SourceError, match=r"formatted_train_labels.npy: labels must be 0 or 1, found 2"):
        read_nuswide(folder, "train")
    np.save(folder / "formatted_train_labels.npy", np.zeros((3, 80)))
    with pytest.raises(SourceError, match=r"is 3 x 80; expected 3 images .* x 81 classes"):
        read_nuswide(folder, "train")
    (folder / "formatted_val_labels.npy").unlink()
    with pytest.raises(SourceError, match=r"formatted_val_labels.npy does not exist"):
        read_nuswide(folder, "val")


# --- observed labels and the validation split -----------------------------------------------------------------------


def reference_observed(labels: np.ndarray, seed: int) -> np.ndarray:
    """generate_observed_labels.py's procedure as read (num_pos 1, num_neg 0), written anew: -1/+1 matrix, a fresh
    RandomState, per row shuffle the positive indices (keep the first) then the negative ones (keep none)."""
    signed = np.where(labels == 1, 1.0, -1.0)
    rng = np.random.RandomState(seed)
    observed = np.zeros_like(signed)
    for i in range(len(signed)):
        for value, keep in ((1.0, 1), (-1.0, 0)):
            indices = np.nonzero(signed[i, :] == value)[0]
            rng.shuffle(indices)
            observed[i, indices[:keep]] = value
    return np.array([row.argmax() if row.max() == 1 else -1 for row in observed])


def test_observed_labels_equal_the_reference_procedure():
    rng = np.random.default_rng(3)
    for density in (0.05, 0.3, 0.9):
        labels = (rng.random((60, 81)) < density).astype(np.uint8)
        drawn = draw_observed(labels)
        assert np.array_equal(drawn, reference_observed(labels, SEED))
        assert np.array_equal(drawn, draw_observed(labels))  # deterministic
        has = labels.any(axis=1)
        assert all(labels[i, drawn[i]] == 1 for i in np.flatnonzero(has)) and (drawn[~has] == -1).all()
    # hand-checked with numpy's RandomState(1200) (frozen across numpy versions): all-positive rows of 4 classes
    assert draw_observed(np.ones((6, 4), np.uint8)).tolist() == [0, 3, 2, 0, 1, 0]
    # the negatives' shuffle moves the generator: without it the second row would draw differently
    assert draw_observed(np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.uint8)).tolist() == \
        reference_observed(np.array([[1, 1, 0, 0], [1, 1, 1, 1]]), SEED).tolist()


def test_validation_split_is_the_reference_rule():
    for count in (3, 10, 101):
        train, val = validation_split(count)
        permutation = np.random.RandomState(1200).permutation(count)
        n_val = int(np.round(0.2 * count))
        assert val.tolist() == sorted(permutation[count - n_val:].tolist())
        assert train.tolist() == sorted(permutation[: count - n_val].tolist())
    assert [len(a) for a in validation_split(2)] == [2, 0]  # the reference's idx[-0:] would give every image


def test_splits_carry_observed_labels_only_in_train(tmp_path):
    part = read_voc(write_tree(voc_files(), tmp_path / "voc.tar"), "train")
    many = SpmlPart(part.class_names, [f"{i}.jpg" for i in range(10)], np.tile(part.labels, (5, 1)), None, [])
    splits = spml_splits(many, read_voc(tmp_path / "voc.tar", "val"))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [8, 2, 1]
    observed = draw_observed(many.labels)
    for record, position in zip(splits["train"], splits["train"].positions):
        assert record.observed_label == observed[position] and record.observed_label in record.labels
    assert all(r.observed_label is None for s in ("validation", "test") for r in splits[s])
    assert sorted(splits["train"].names + splits["validation"].names) == sorted(many.names)


def test_records_decode_images_only_when_asked(tmp_path, monkeypatch):
    part = read_voc(write_tree(voc_files(), tmp_path / "voc.tar"), "train")
    reads = []
    original = part.tree.read
    monkeypatch.setattr(part.tree, "read", lambda rel, rooted=True: reads.append(rel) or original(rel, rooted))
    records = SpmlRecords(part)
    record = records[0]
    assert record.labels and reads == []
    assert record.image is not None and reads == ["JPEGImages/2008_000002.jpg"]


# --- the record's schema --------------------------------------------------------------------------------------------


def test_spml_schema_equals_datasets_own_and_round_trips(tmp_path):
    from datasets import DatasetInfo, Features, load_dataset
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = SpmlSchema(("cat", "dog", "car"))
    feats = schema.features()
    assert isinstance(feats, Features) and feats.to_dict() == schema.features_dict()
    assert schema.arrow_schema().equals(feats.arrow_schema, check_metadata=True)
    assert Features.from_arrow_schema(schema.arrow_schema()) == feats
    assert schema.card_features() == DatasetInfo(features=feats)._to_yaml_dict()["features"]
    rows = [schema.encode_row(SpmlRecord("a.jpg", None, (0, 2), 2), jpeg("a")),
            schema.encode_row(SpmlRecord("b.jpg", None, (1,), None), jpeg("b"))]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema())
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    loaded = load_dataset(str(tmp_path), split="train")
    assert loaded.features == feats
    assert [loaded[i]["labels"] for i in range(2)] == [[0, 2], [1]]
    assert [loaded[i]["observed_label"] for i in range(2)] == [2, None]
    assert loaded[0]["images"].size == (12, 8)
    with pytest.raises(ValueError, match="class index 3 outside 0..2"):
        schema.encode_row(SpmlRecord("c.jpg", None, (3,), None), b"")


def test_each_set_reads_by_name_from_its_official_files(tmp_path):
    from aclbuild.loaders.spml import read_spml_splits

    for part in ("train", "val"):
        write_tree(coco_images(part), tmp_path / "coco" / f"{part}2014.zip")
    annotations = {f"annotations/instances_{p}2014.json": json.dumps(coco_instances(p)).encode()
                   for p in ("train", "val")}  # fmt: skip
    write_tree(annotations, tmp_path / "coco" / "annotations_trainval2014.zip")
    sources = {"voc2012-spml": write_tree(voc_files(), tmp_path / "voc.tar"), "coco2014-spml": tmp_path / "coco",
               "cub-spml": write_tree(cub_files(), tmp_path / "cub.tgz"),
               "nuswide-spml": nus_folder(tmp_path)}  # fmt: skip
    sizes = {name: [len(records) for records in read_spml_splits(name, source).values()]
             for name, source in sources.items()}  # fmt: skip
    # train 80% / validation 20% (rounded) of the official training part; test the official test part
    assert sizes == {"voc2012-spml": [2, 0, 1], "coco2014-spml": [2, 1, 3], "cub-spml": [2, 1, 1],
                     "nuswide-spml": [2, 1, 3]}  # fmt: skip
    train = read_spml_splits("cub-spml", sources["cub-spml"])["train"]
    observed = draw_observed(np.array(CUB_PRESENT)[[0, 1, 3]])  # drawn on the whole official training part
    expected = [None if observed[p] < 0 else observed[p] for p in validation_split(3)[0]]
    assert [r.observed_label for r in train] == expected
