"""The Python API beside the CLI: one function per publishing verb, keyword names as the CLI's options.

``import aclbuild`` gives them as ``aclbuild.build``, ``aclbuild.push``, ``aclbuild.verify``, ``aclbuild.export``
and ``aclbuild.load_cl_dataset``. Bad input raises :class:`aclbuild.errors.InputError` (an
:class:`aclbuild.errors.AclbuildError`) whose message says what is wrong and how to mend it; work that fails raises
another ``AclbuildError``.

Example: labels to a published, verified dataset and libcll's pickle (``labels/labels.parquet`` is the table
`aclbuild generate` wrote for digits with 3 synthetic CLs each; the Hub here is the test suite's loopback server,
at HF_ENDPOINT):
    >>> import aclbuild
    >>> folder = aclbuild.build("labels/labels.parquet", "digits-uniform", "out/digits", repo_id="aclorg/digits-uniform")
    >>> aclbuild.push(folder, "aclorg/digits-uniform").files
    5
    >>> aclbuild.verify("aclorg/digits-uniform", against=folder).problems
    []
    >>> aclbuild.export(folder, "libcll-data")
    PosixPath('libcll-data/digitsuniform.pkl')
    >>> train = aclbuild.load_cl_dataset(folder, "train", num_cl=1)
    >>> len(train), train.num_classes
    (1400, 10)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aclbuild.hub import PushResult
    from aclbuild.verification import VerifyReport

__all__ = ["build", "push", "verify", "export"]  # and load_cl_dataset, through __getattr__ (it imports torch)


def build(
    labels: str | Path,
    dataset: str,
    output_dir: str | Path,
    *,
    source: str | Path | None = None,
    test_source: str | Path | None = None,
    num_cl: int | None = None,
    repo_id: str | None = None,
    max_shard_size: str | int = "500MB",
    overwrite: bool = False,
    drop_failed: bool = False,
    labels_log: str | Path | None = None,
    allow_kind_mismatch: bool = False,
    card_authors: Sequence[str] = (),
    contact: str | None = None,
) -> Path:
    """Build the dataset repository folder ``output_dir`` (`aclbuild build`): Parquet shards, card, figures.

    ``labels`` is the ``labels.parquet`` of `aclbuild generate` (its settings travel inside it), a legacy CL pickle
    (it carries its images) or a label CSV; a table's or CSV's images come from ``source`` (the base's archive or
    folder; none for the embedded digits), which also gives the test split unless ``test_source`` does. ``dataset``
    is the variant (`aclbuild datasets` lists them). ``num_cl`` keeps the first N CLs of each image (default: the
    variant's released number, 3). ``repo_id`` (ORG/NAME) is named in the card's usage example. ``max_shard_size``
    bounds a Parquet shard (``"500MB"`` or bytes). An existing non-empty ``output_dir`` is replaced only with
    ``overwrite``; ``drop_failed`` leaves out images whose labeling failed. ``labels_log`` is the ``labels.json`` of
    the `generate` run that made a legacy pickle or CSV (a labels.parquet carries its own and refuses one); a
    variant whose kind contradicts it is refused unless ``allow_kind_mismatch``. ``card_authors`` and ``contact`` go
    into the card. Returns ``output_dir``.

    Example:
        >>> import aclbuild
        >>> folder = aclbuild.build("labels/labels.parquet", "digits-uniform", "out/digits")
        >>> sorted(path.name for path in (folder / "data").iterdir())
        ['test-00000-of-00001.parquet', 'train-00000-of-00001.parquet']
    """
    from aclbuild.builder import build_from_source
    from aclbuild.repository import parse_size

    shard_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else int(max_shard_size)
    return build_from_source(
        labels, dataset, output_dir, source=source, test_source=test_source, num_cl=num_cl,
        max_shard_size=shard_bytes, overwrite=overwrite, drop_failed=drop_failed, repo_id=repo_id,
        labels_log=labels_log, allow_kind_mismatch=allow_kind_mismatch, card_authors=card_authors, contact=contact,
    )  # fmt: skip


def push(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    message: str | None = None,
    dry_run: bool = False,
) -> PushResult:
    """Publish a repository folder as the dataset repo ``repo_id`` in one atomic commit (`aclbuild push`).

    The folder is validated first; nothing is committed when the repo already equals it. ``token`` defaults to
    HF_TOKEN, then the saved login; ``endpoint`` to HF_ENDPOINT, then huggingface.co. ``revision`` is the branch to
    commit to (created when missing), ``create_pr`` opens a pull request instead, ``dry_run`` only plans. Returns
    the :class:`aclbuild.hub.PushResult`: the commit (``commit_oid`` None when unchanged), files and bytes sent.

    Example:
        >>> import aclbuild
        >>> result = aclbuild.push("out/digits", "aclorg/digits-uniform")
        >>> print(*sorted(result.plan.added), sep="\\n")
        README.md
        aclbuild.json
        data/test-00000-of-00001.parquet
        data/train-00000-of-00001.parquet
        figures/transition_matrix.png
        >>> result.files, result.commit_oid is not None
        (5, True)
    """
    from aclbuild.hub import push_folder

    return push_folder(
        folder, repo_id, token=token, endpoint=endpoint, private=private, revision=revision, create_pr=create_pr,
        message=message, dry_run=dry_run,
    )  # fmt: skip


def verify(
    repo_id: str,
    *,
    revision: str | None = None,
    against: str | Path | None = None,
    streaming: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> VerifyReport:
    """Load a published dataset as a downstream user would and check it (`aclbuild verify`).

    Checked: the card, the loaded features against it, split sizes, class names and every row against the content
    hashes; with ``against`` (a local build) also that every row equals it; ``streaming`` loads a second time with
    ``streaming=True``. ``endpoint`` defaults to HF_ENDPOINT, then huggingface.co. Returns the
    :class:`aclbuild.verification.VerifyReport`: ``problems`` (empty when all holds) and ``split_sizes``.

    Example:
        >>> import aclbuild
        >>> report = aclbuild.verify("aclorg/digits-uniform", against="out/digits")
        >>> report.problems, report.split_sizes
        ([], {'train': 1400, 'test': 397})
    """
    saved = os.environ.get("HF_ENDPOINT")
    if endpoint:  # verify_remote reads HF_ENDPOINT, as `aclbuild verify --endpoint` sets it
        os.environ["HF_ENDPOINT"] = endpoint.rstrip("/")
    try:
        from aclbuild.verification import verify_remote

        return verify_remote(repo_id, revision=revision, against=against, streaming=streaming, token=token)
    finally:
        if endpoint and saved is None:
            del os.environ["HF_ENDPOINT"]
        elif endpoint:
            os.environ["HF_ENDPOINT"] = saved


def export(folder: str | Path, output_dir: str | Path, *, split: str = "train", overwrite: bool = False) -> Path:
    """Write ``split`` (train or test) of a repository folder as the legacy pickle libcll reads (`aclbuild export`).

    The file is ``output_dir/<variant name without dashes>.pkl`` for the train split (aclcifar10-r gives
    aclcifar10r.pkl; libcll's ACL datasets read ``{root}/aclcifar10.pkl``), ``<that stem>_test.pkl`` for the test
    split. An existing file is replaced only with ``overwrite``; ``output_dir`` may not lie inside ``folder``.
    Returns the pickle's path.

    Example:
        >>> import aclbuild
        >>> aclbuild.export("out/digits", "libcll-data")
        PosixPath('libcll-data/digitsuniform.pkl')
        >>> aclbuild.export("out/digits", "libcll-data", split="test").name
        'digitsuniform_test.pkl'
    """
    from aclbuild.pickle_export import export_split

    return export_split(folder, output_dir, split, overwrite)


def __getattr__(name: str):
    """``load_cl_dataset`` (:func:`aclbuild.cl_data.load_cl_dataset`), imported on first use: it imports torch."""
    if name == "load_cl_dataset":
        from aclbuild.cl_data import load_cl_dataset

        return load_cl_dataset
    raise AttributeError(f"module 'aclbuild.api' has no attribute {name!r}")
