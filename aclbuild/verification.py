"""Checking a published dataset the way a downstream user meets it: `aclbuild verify`.

The repo is loaded with plain ``load_dataset`` (and ``streaming=True`` when asked) into a fresh temporary cache.
Checked: the card's YAML, the loaded features against the card's ``dataset_info``, split sizes, class names against
the registry, and every row against the content hash in the repo's ``aclbuild.json``; with ``against`` also
against the local build (hash, then the first differing row is named). Only the ``default`` config is checked: other
configs a repo holds (e.g. one added with ``push_to_hub(config_name=...)``) are named in the summary.

Example:
    >>> report = verify_remote("my-org/aclcifar10", against="out/aclcifar10")   # doctest: +SKIP
    >>> report.problems                                                          # doctest: +SKIP
    []
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aclbuild.errors import InvalidRepositoryError, SourceError, UnknownNameError
from aclbuild.hub import DEFAULT_ENDPOINT
from aclbuild.hub_card import DEFAULT_CONFIG, default_view, other_config_names
from aclbuild.hub_errors import hub_errors, quiet_hub_logs

if TYPE_CHECKING:
    from aclbuild.repository import Manifest

BATCH_ROWS = 1000


@dataclass
class VerifyReport:
    """One line per difference found (empty when all holds) and the split sizes that were loaded."""

    problems: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    other_configs: list[str] = field(default_factory=list)  # configs besides the default one: named, not checked

    @property
    def summary(self) -> str:
        """One line: the split sizes, and the other configs when the repo has some.

        Example:
            >>> VerifyReport(split_sizes={"train": 60}, other_configs=["small"]).summary
            'train 60 rows; card, features, classes and content hashes hold; other configs, not checked: small'
        """
        sizes = ", ".join(f"{split} {n:,} rows" for split, n in self.split_sizes.items())
        others = f"; other configs, not checked: {', '.join(self.other_configs)}" if self.other_configs else ""
        return f"{sizes}; card, features, classes and content hashes hold{others}"


@dataclass
class _Expected:
    """What the rows must match: the remote card and manifest, and the local build when given."""

    card_features: object
    declared: dict[str, int]
    class_names: list[str] | None
    remote_hashes: dict[str, str]
    local: Path | None
    local_hashes: dict[str, str]


def verify_remote(
    repo_id: str,
    revision: str | None = None,
    against: str | Path | None = None,
    streaming: bool = False,
    token: str | None = None,
) -> VerifyReport:
    """Load ``repo_id`` from the Hub (HF_ENDPOINT) and check it; see the module docstring."""
    import datasets
    from datasets import DatasetInfo
    from huggingface_hub import DatasetCard, DatasetCardData

    from aclbuild.cards import card_parse_problem, card_problems
    from aclbuild.repository import MANIFEST, is_spml_columns, read_features, read_manifest
    from aclbuild.validate import validate_repository

    from huggingface_hub import get_token

    from aclbuild.hub import check_repo_id

    check_repo_id(repo_id)
    token = token or get_token() or None  # what huggingface_hub sends: a refused one is named, not taken for none
    endpoint = _sync_endpoint()
    quiet_hub_logs()
    datasets.disable_progress_bars()  # the verdict is the output; "Generating split" bars are noise here
    if against is not None:
        against = Path(against)
        local_problems = validate_repository(against)
        if local_problems:
            raise InvalidRepositoryError(str(against), local_problems)
    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="aclbuild-verify-") as cache, _fresh_hub_cache(cache):
        with hub_errors(endpoint, repo_id, token, reading=True):
            card_text = _download(repo_id, "README.md", revision, token, cache)
            manifest = _download(repo_id, MANIFEST, revision, token, cache, missing_ok=True)
        try:
            full = DatasetCard(card_text).data.to_dict()
        except Exception as exc:  # noqa: BLE001 - a card that does not parse is the finding; nothing else can load
            report.problems.append(f"card: {card_parse_problem(exc, card_text, 'README.md on the Hub')}")
            return report
        report.other_configs = other_config_names(full)
        data = default_view(full)  # the default config's entries, as build writes them for a repo of its own
        card = DatasetCard(f"---\n{DatasetCardData(**data).to_yaml()}\n---\n")
        features_listed = [f.get("name") for f in (data.get("dataset_info") or {}).get("features") or []
                           if isinstance(f, dict)]  # fmt: skip
        if is_spml_columns(features_listed):  # a single-positive multi-label set: its own card checks
            from aclbuild.spml_card import spml_card_problems

            report.problems += [f"card: {p}" for p in spml_card_problems(card)]
        else:
            report.problems += [f"card: {p}" for p in card_problems(card)]
        try:
            card_features = DatasetInfo._from_yaml_dict(dict(data.get("dataset_info") or {})).features
        except Exception:  # noqa: BLE001 - reported by card_problems
            card_features = None
        remote_manifest = _parse_manifest(manifest, report.problems)
        expected = _Expected(
            card_features=card_features,
            declared={s["name"]: s.get("num_examples") for s in (data.get("dataset_info") or {}).get("splits") or []},
            class_names=_registry_class_names(remote_manifest.dataset if remote_manifest else None),
            remote_hashes=remote_manifest.hashes if remote_manifest else {},
            local=against,
            local_hashes={},
        )
        if against is not None:  # validated above: its manifest is whole
            expected.local_hashes = read_manifest(against).hashes
            local_card = default_view(DatasetCard.load(against / "README.md").data.to_dict())
            if local_card != data:
                report.problems.append("card: YAML differs from the local build's card")
            if card_features is not None and read_features(against) != card_features:
                report.problems.append("card: features differ from the local build's")
        for mode in (False, True) if streaming else (False,):
            _check_load(repo_id, revision, token, cache, mode, expected, report)
    return report


def _check_load(repo_id, revision, token, cache, streaming: bool, expected: _Expected, report: VerifyReport) -> None:
    from datasets import load_dataset

    tag = "[streaming] " if streaming else ""
    name = DEFAULT_CONFIG if report.other_configs else None  # one config: whatever its name, load_dataset picks it
    try:
        loaded = load_dataset(repo_id, name, revision=revision, token=token, cache_dir=cache, streaming=streaming,
                              download_mode="force_redownload")  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding itself
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        report.problems.append(f"{tag}load_dataset({repo_id!r}) failed: {type(exc).__name__}: {first}")
        return
    if set(loaded) != set(expected.declared):
        report.problems.append(
            f"{tag}splits: load_dataset gives {sorted(loaded)}, the card declares {sorted(expected.declared)}"
        )
    if expected.local is not None and set(loaded) != set(expected.local_hashes):
        report.problems.append(f"{tag}splits: {sorted(loaded)} on the Hub, {sorted(expected.local_hashes)} locally")
    for split, ds in loaded.items():
        report.problems += [tag + p for p in _check_split(split, ds, expected, report)]


def _check_split(split: str, ds, expected: _Expected, report: VerifyReport) -> list[str]:
    from datasets import Image

    from aclbuild.repository import MANIFEST, hash_rows, read_table, row_values

    problems = []
    features = ds.features
    if expected.card_features is not None and features != expected.card_features:
        problems.append(f"split '{split}': loaded features differ from the card's dataset_info")
    if expected.class_names is not None and features is not None:
        for column in ("ord_labels", "cl_labels"):
            label = features.get(column)
            names = getattr(getattr(label, "feature", label), "names", None)
            if names != expected.class_names:
                problems.append(f"split '{split}': {column} class names {names} differ from the registry's")
    local = None
    if expected.local is not None and split in expected.local_hashes:
        local = row_values(read_table(expected.local, split))
    digest, count, first_diff, null_cls = hashlib.sha256(), 0, None, 0
    rows = ds.cast_column("images", Image(decode=False)).with_format("arrow")
    for batch in rows.iter(batch_size=BATCH_ROWS):
        if "cl_labels" in batch.schema.names:  # a CL set's test split stores -1s; null breaks DataLoader
            null_cls += batch.column("cl_labels").null_count
        batch_rows = row_values(batch)
        hash_rows(digest, batch_rows)
        for offset, row in enumerate(batch_rows):
            if local is not None and first_diff is None:
                first_diff = _diff_row(count + offset, row, local)
        count += batch.num_rows
    report.split_sizes[split] = count
    if split == "test" and null_cls:
        problems.append(
            f"split 'test': {null_cls:,} rows hold null cl_labels (an aclbuild before 0.2 built it), which torch's "
            "DataLoader cannot batch; rebuild with `aclbuild build` (it stores -1, no label) and push again"
        )
    declared = expected.declared.get(split)
    if declared is not None and declared != count:
        problems.append(f"split '{split}': the card says {declared:,} examples, load_dataset gives {count:,}")
    if expected.remote_hashes.get(split) and expected.remote_hashes[split] != digest.hexdigest():
        problems.append(f"split '{split}': rows differ from the content hash in the repo's {MANIFEST}")
    if local is not None:
        if len(local) != count:
            problems.append(f"split '{split}': {count:,} rows on the Hub, {len(local):,} in the local build")
        if expected.local_hashes[split] != digest.hexdigest():
            problems.append(
                f"split '{split}': rows differ from the local build" + (f" ({first_diff})" if first_diff else "")
            )
    return problems


def _diff_row(index: int, row, local: list) -> str | None:
    """How remote row ``index`` differs from the local one, or None when equal."""
    if index >= len(local):
        return f"row {index} is not in the local build"
    if row == local[index]:
        return None
    fields = getattr(row, "_fields", ("name", "image bytes", "ord_label", "cl_labels"))  # an SPML row names its own
    for what, remote_value, local_value in zip(fields, row, local[index]):
        what = "image bytes" if what == "image" else what
        if remote_value != local_value:
            shown = "differ" if what == "image bytes" else f"{remote_value!r} on the Hub, {local_value!r} locally"
            return f"first at row {index} ({local[index][0]}): {what} {shown}"
    return None


def _download(repo_id, filename, revision, token, cache, missing_ok: bool = False) -> str | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, token=token,
                               cache_dir=cache, force_download=True)  # fmt: skip
    except EntryNotFoundError:
        if missing_ok:
            return None
        raise
    return Path(path).read_text(encoding="utf-8")


def _parse_manifest(text: str | None, problems: list[str]) -> Manifest | None:
    """The repo's manifest, or None with the problem noted when it is missing, does not parse or is malformed."""
    from aclbuild.repository import MANIFEST, parse_manifest

    try:
        return parse_manifest(text, where=f"the repo's {MANIFEST}", fix="push the build again with `aclbuild push`")
    except SourceError as exc:
        problems.append(str(exc))
        return None


def _registry_class_names(dataset: str | None) -> list[str] | None:
    from aclbuild.registry import get_variant

    try:
        return list(get_variant(dataset).base.class_names) if dataset else None
    except UnknownNameError:
        return None


@contextlib.contextmanager
def _fresh_hub_cache(cache: str) -> Iterator[None]:
    """Route huggingface_hub's file cache into ``cache``: a cached copy must never stand in for the remote."""
    import huggingface_hub.constants as hub_constants

    saved = hub_constants.HF_HUB_CACHE
    hub_constants.HF_HUB_CACHE = os.path.join(cache, "hub")
    try:
        yield
    finally:
        hub_constants.HF_HUB_CACHE = saved


def _sync_endpoint() -> str:
    """HF_ENDPOINT, pushed into huggingface_hub and datasets even when they were imported before it was set."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    hub_constants.ENDPOINT = endpoint
    hub_constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    datasets.config.HF_ENDPOINT = endpoint
    return endpoint
