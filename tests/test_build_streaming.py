"""Build streams a split's images: a lazy source decodes each image once, rows are read in small batches, and
neither decoded images nor PNG bytes pile up with the split's size; the output is what an in-memory list gives."""

from __future__ import annotations

import hashlib
import json
import threading
import tracemalloc
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, Features, Image, load_dataset
from PIL import Image as PILImage

from aclbuild import builder, repository
from aclbuild.builder import build_repository
from aclbuild.loaders import hf_source
from aclbuild.loaders.hf_source import LazyRecord
from aclbuild.png import encode_png_batch
from aclbuild.registry import get_variant
from aclbuild.schema import ClRecord


class DecodeLog:
    """Counts each image's decodes and how many decoded images are alive (freed when the array is collected)."""

    def __init__(self) -> None:
        self.decodes: Counter = Counter()
        self.alive = self.peak = 0
        self.lock = threading.Lock()

    def made(self, key, image: np.ndarray) -> np.ndarray:
        with self.lock:
            self.decodes[key] += 1
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        weakref.finalize(image, self._freed)
        return image

    def _freed(self) -> None:
        with self.lock:
            self.alive -= 1


def pixels(i: int, side: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)


class GeneratedRecords(Sequence):
    """Train records whose image ``i`` is made (decoded) when read; a slice is a view of at most ``max_slice`` rows,
    so rows can only be read in small batches."""

    def __init__(self, n: int, side: int, log: DecodeLog, max_slice: int | None = None, positions=None) -> None:
        self.n, self.side, self.log, self.max_slice = n, side, log, max_slice
        self.positions = range(n) if positions is None else positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            view = self.positions[i]
            if self.max_slice is not None and len(view) > self.max_slice:
                raise AssertionError(f"read {len(view)} rows at once; the source allows {self.max_slice}")
            return GeneratedRecords(self.n, self.side, self.log, self.max_slice, view)
        p = self.positions[i]
        return LazyRecord(f"img_{p:06d}.png", None, p % 10, ((p + 1) % 10, (p + 4) % 10),
                          load=lambda: self.log.made(p, pixels(p, self.side)))  # fmt: skip


def manifest(folder: Path) -> dict:
    return json.loads((folder / "aclbuild.json").read_text(encoding="utf-8"))["splits"]


def test_lazy_source_decodes_each_image_once_in_small_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(repository.writer, "ENCODE_CHUNK", 25)
    monkeypatch.setattr(repository.writer, "ENCODE_THREADS", 2)
    log, n = DecodeLog(), 1200  # two row groups
    train = GeneratedRecords(n, 32, log, max_slice=25)
    out = build_repository(get_variant("aclcifar10"), train, None, tmp_path / "streamed")
    assert sorted(log.decodes) == list(range(n)) and set(log.decodes.values()) == {1}  # each image decoded once
    assert log.peak <= 2 * 25, log.peak  # at most the chunks being encoded, one per thread
    # an in-memory list of the same rows, default chunks and threads: the same content hash, the same shard bytes
    records = [ClRecord(r.name, pixels(i, 32), r.ord_label, r.cl_labels) for i, r in enumerate(train)]
    monkeypatch.undo()
    listed = build_repository(get_variant("aclcifar10"), records, None, tmp_path / "listed")
    assert manifest(out) == manifest(listed)
    shard = "data/train-00000-of-00001.parquet"
    assert (out / shard).read_bytes() == (listed / shard).read_bytes()
    digest = hashlib.sha256()  # computed here, row by row, from the rows themselves
    for r in records:
        repository.record_hash_update(digest, r.name, encode_png_batch(r.image[None])[0], r.ord_label, r.cl_labels)
    assert manifest(out)["train"]["sha256"] == digest.hexdigest()


def _peak_traced_bytes(tmp_path: Path, n: int) -> tuple[int, int]:
    """(peak bytes allocated during a build of ``n`` generated 32x32 rows, the PNG bytes of that split)."""
    train = GeneratedRecords(n, 32, DecodeLog())
    tracemalloc.start()
    try:
        out = build_repository(get_variant("aclcifar10"), train, None, tmp_path / f"n{n}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, sum(p.stat().st_size for p in (out / "data").iterdir())


def test_memory_does_not_grow_with_the_split(tmp_path, monkeypatch):
    # the figure is drawn on a thread beside the encoders: its allocations would make the peak depend on timing
    monkeypatch.setattr(builder, "save_transition_heatmap", lambda *args: Path(args[-1]).parent.mkdir(parents=True))
    monkeypatch.setattr(repository.writer, "ENCODE_CHUNK", 100)  # both builds reach the steady state: full row groups,
    monkeypatch.setattr(repository.writer, "ENCODE_THREADS", 2)  # every chunk in flight
    small, _ = _peak_traced_bytes(tmp_path, 2000)
    large, size = _peak_traced_bytes(tmp_path, 6000)
    extra_pngs = size * 4 / 6  # the 4,000 more rows' PNG bytes (random pixels: about 3 kB each)
    assert large - small < 0.4 * extra_pngs, (small, large, extra_pngs)  # names and labels only: ~0.2 kB a row


@pytest.fixture
def parquet_source(tmp_path) -> Path:
    """A Parquet folder written by datasets: 300 train and 40 test 8x8 images of three classes."""
    features = Features({"img": Image(), "label": ClassLabel(names=["ant", "bee", "cow"])})
    folder = tmp_path / "source"
    folder.mkdir()
    for split, n in (("train", 300), ("test", 40)):
        images = [PILImage.fromarray(pixels(i + (10**6 if split == "test" else 0), 8)) for i in range(n)]
        Dataset.from_dict({"img": images, "label": [i % 3 for i in range(n)]}, features=features).to_parquet(
            str(folder / f"{split}.parquet")
        )
    return folder


def test_custom_source_streams_into_several_shards(cli, tmp_path, monkeypatch, parquet_source):
    """generate -> build with a tiny --max-shard-size: several shards, each source image decoded once and never
    all at once, the same content as a one-shard build, loaded back by datasets and validated."""
    labels = tmp_path / "labels"
    result = cli("generate", "bugs", "--source", parquet_source, "--labeler", "synthetic", "--num-rounds", "2",
                 "-o", labels)  # fmt: skip
    assert result.exit_code == 0, result.output
    log, decode = DecodeLog(), hf_source.decode_image
    monkeypatch.setattr(hf_source, "decode_image", lambda cell, side: log.made(id(cell), decode(cell, side)))
    monkeypatch.setattr(hf_source, "DECODE_CACHE", 4)
    monkeypatch.setattr(repository.writer, "ENCODE_CHUNK", 10)
    monkeypatch.setattr(repository.writer, "ENCODE_THREADS", 2)
    build = ("build", labels / "labels.parquet", "-d", "bugs-uniform", "--source", parquet_source)
    result = cli(*build, "-o", tmp_path / "sharded", "--max-shard-size", "20KB")
    assert result.exit_code == 0, result.output
    assert sum(log.decodes.values()) == 340  # every train and test image once
    assert log.peak <= 2 * 4 + 2 * 10, log.peak  # each split's small decode cache, the chunks being encoded
    sharded = tmp_path / "sharded"
    shards = repository.split_shards(sharded)
    assert len(shards["train"]) > 2 and shards["train"][-1].name.endswith(f"-of-{len(shards['train']):05d}.parquet")
    assert all(p.stat().st_size < 30_000 for p in shards["train"])
    assert cli(*build, "-o", tmp_path / "single").exit_code == 0
    assert manifest(sharded) == {
        split: info | {"num_shards": len(shards[split])} for split, info in manifest(tmp_path / "single").items()
    }
    assert cli("validate", sharded).exit_code == 0
    train = load_dataset(str(sharded), split="train")
    assert len(train) == 300 and train["ord_labels"] == [i % 3 for i in range(300)]
    assert all((np.asarray(train[i]["images"]) == pixels(i, 8)).all() for i in (0, 137, 299))
    assert len(load_dataset(str(sharded), split="test")) == 40


def test_shards_are_cut_where_the_next_row_would_pass_the_limit(tmp_path):
    """Greedy, in order: a shard takes rows while its size (PNG + name + labels) stays within the limit, a row
    larger than the limit gets a shard of its own, and the rows and content hash are those of one shard."""
    from aclbuild.schema import arrow_schema

    schema = arrow_schema(tuple("abcdefghij"), 2)
    def image(i: int, kind: str) -> np.ndarray:  # noise PNGs are large (n: about 1.8 kB, h: half that), flat small
        noisy = pixels(i, 24)
        noisy[{"n": 24, "h": 12, "z": 0}[kind]:] = 0
        return noisy

    kinds = "zznzzzhhzzhnnzz"
    records = [ClRecord(f"r{i}", image(i, kind), i % 10, (0, 1)) for i, kind in enumerate(kinds)]
    limit = 1500
    info = repository.write_split(tmp_path / "cut", "train", records, schema, max_shard_size=limit)
    one = repository.write_split(tmp_path / "one", "train", records, schema)
    assert (info.num_examples, info.num_bytes, info.sha256) == (one.num_examples, one.num_bytes, one.sha256)
    shards = repository.split_shards(tmp_path / "cut")["train"]
    assert len(shards) == info.num_shards > 2 and not list((tmp_path / "cut" / "data").glob(".*"))
    sizes = [[len(png) + len(name) + 8 * 3 for name, png, *_ in repository.row_values(pq.read_table(p))]
             for p in shards]  # fmt: skip
    assert sum(sizes, []) == [len(encode_png_batch(r.image[None])[0]) + len(r.name) + 24 for r in records]
    for shard, following in zip(sizes, sizes[1:] + [None]):
        assert sum(shard) <= limit or len(shard) == 1
        assert following is None or sum(shard) + following[0] > limit  # nothing that fitted was left out
    assert max(map(sum, sizes)) > limit  # a noisy row passes the limit alone: it stands alone
