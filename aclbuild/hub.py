"""Publishing a repository folder on the Hugging Face Hub: `aclbuild push`.

The folder goes up as it is (its Parquet shards are never decoded or re-encoded) in one commit that adds changed
files and removes stale ones under ``data/`` and ``figures/``; unchanged data makes no commit. Only the README goes
up changed: its usage example names the target repo, and the other configs a repo may hold (their files and card
entries) are kept (:mod:`aclbuild.hub_card`). The folder itself is only read. A commit is atomic on
the Hub, so a failed push leaves the remote at its previous commit. The token is never printed, logged or written:
every message that leaves this module passes through :func:`aclbuild.hub_errors.scrub`.

Example:
    >>> result = push_folder("out/aclcifar10", "my-org/aclcifar10", token="hf_...")   # doctest: +SKIP
    >>> result.commit_url                                                               # doctest: +SKIP
    'https://huggingface.co/datasets/my-org/aclcifar10/commit/3f2c...'
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aclbuild.errors import AuthError, HubError, InputError, InvalidRepositoryError, SourceError
from aclbuild.hub_card import PushedCard, pushed_card
from aclbuild.hub_errors import (
    answer_lost, head_after_failure, hub_errors, is_transient, quiet_hub_logs, with_retries,
)  # fmt: skip

DEFAULT_ENDPOINT = "https://huggingface.co"
MANAGED_PREFIXES = ("data/", "figures/")  # remote files here that the folder lacks are stale and get deleted
CARD = "README.md"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@dataclass
class PushPlan:
    """What a push changes on the remote, file by file (repository paths)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    upload_bytes: int = 0
    head: str | None = None  # remote commit the plan was made against; None when the repo does not exist yet
    card: PushedCard | None = None  # the README that goes up (repo id filled in, other configs kept)
    contents: dict[str, Path | bytes] = field(default_factory=dict, repr=False)  # what each path uploads

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.deleted)


@dataclass
class PushResult:
    """The outcome of one push: the commit (or None when nothing changed), what went up, how long it took."""

    repo_id: str
    revision: str
    plan: PushPlan
    commit_url: str | None
    commit_oid: str | None
    pr_url: str | None
    files: int
    bytes: int
    seconds: float


def resolve_token(token: str | None) -> str:
    """--token, else HF_TOKEN, else the saved login; raises AuthError when there is none."""
    from huggingface_hub import get_token

    resolved = token or get_token()
    if not resolved:
        raise AuthError("no Hub token: pass --token, set HF_TOKEN, or log in once with `hf auth login`")
    return resolved


def target_repo_ids(folders: Sequence[Path], repo_id: str | None, org: str | None) -> list[str]:
    """One repo id per folder: ``repo_id`` for a single folder, or ``ORG/<dataset>`` from each folder's manifest."""
    from aclbuild.repository import MANIFEST, read_manifest

    if bool(repo_id) == bool(org):
        raise InputError("give exactly one of --repo-id ORG/NAME or --org ORG")
    if repo_id:
        if len(folders) != 1:
            raise InputError("--repo-id names one repository; with several folders use --org ORG")
        ids = [repo_id]
    else:
        ids = []
        for folder in folders:
            try:
                name = read_manifest(folder).dataset
            except SourceError as exc:
                raise InputError(f"{exc}; or pass --repo-id ORG/NAME instead") from None
            if not name:
                raise InputError(f"{folder}'s manifest ({MANIFEST}) names no dataset; pass --repo-id ORG/NAME instead")
            ids.append(f"{org}/{name}")
    return [check_repo_id(rid) for rid in ids]


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a Hub repo id ORG/NAME (huggingface_hub's rules); raises InputError otherwise.

    Example:
        >>> check_repo_id("my-org/aclcifar10")
        'my-org/aclcifar10'
        >>> check_repo_id("bad id!!/x y")   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        aclbuild.errors.InputError: 'bad id!!/x y' is not a Hub repo id: ORG/NAME, letters, digits, - _ . (e.g. ...)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)  # lengths, '--' and '..', a leading or trailing '-' or '.'
        valid = bool(REPO_ID.match(repo_id))  # and the namespace that validate_repo_id leaves optional
    except HFValidationError:
        valid = False
    if not valid:
        raise InputError(f"{repo_id!r} is not a Hub repo id: ORG/NAME, letters, digits, - _ . (e.g. my-org/aclcifar10)")
    return repo_id


def local_files(folder: Path) -> dict[str, Path]:
    """Repository path -> file, for every file of the folder (hidden files and folders left out)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = path
    return files


def same_as_remote(content: Path | bytes, entry) -> bool:
    """Whether a file equals the remote one: by sha256 for an LFS file, else by git blob hash (huggingface_hub's)."""
    import io

    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    if entry.lfs:
        with content.open("rb") if isinstance(content, Path) else io.BytesIO(content) as f:
            return entry.lfs.sha256 == sha_fileobj(f).hex()
    return entry.blob_id == git_hash(content.read_bytes() if isinstance(content, Path) else content)


def recorded_repo_id(folder: Path) -> str | None:
    """The repo id the folder was built for (aclbuild.json's ``repo_id``; None when built without --repo-id)."""
    from aclbuild.repository import read_manifest

    try:
        return read_manifest(folder).repo_id
    except SourceError:  # validate reports a broken manifest; here it only means no recorded repo id
        return None


def plan_push(api, repo_id: str, folder: Path, revision: str) -> PushPlan:
    """Compare the folder (its card as it would go up) with the remote at ``revision`` (or at main when that branch
    does not exist yet)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    plan = PushPlan()
    remote = {}
    for rev in dict.fromkeys((revision, "main")):
        try:
            plan.head = api.repo_info(repo_id, repo_type="dataset", revision=rev).sha
            remote = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", revision=rev, recursive=True)
                      if isinstance(f, RepoFile)}  # fmt: skip
            break
        except RevisionNotFoundError:
            continue
        except RepositoryNotFoundError:
            break
    plan.contents = dict(local_files(folder))
    if CARD in plan.contents:
        remote_card = _read_remote(api, repo_id, CARD, plan.head) if CARD in remote else None
        plan.card = pushed_card(plan.contents[CARD].read_text(encoding="utf-8"), remote_card, repo_id,
                                recorded_repo_id(folder))  # fmt: skip
        plan.contents[CARD] = plan.card.text.encode("utf-8")
    for rel, content in plan.contents.items():
        entry = remote.get(rel)
        if entry is None:
            plan.added.append(rel)
        elif same_as_remote(content, entry):
            plan.unchanged.append(rel)
            continue
        else:
            plan.changed.append(rel)
        plan.upload_bytes += content.stat().st_size if isinstance(content, Path) else len(content)
    kept = plan.card.other_patterns if plan.card else []
    plan.deleted = sorted(
        p for p in remote
        if p.startswith(MANAGED_PREFIXES) and p not in plan.contents and not any(fnmatch.fnmatch(p, k) for k in kept)
    )  # fmt: skip
    return plan


def _read_remote(api, repo_id: str, path: str, revision: str) -> str:
    """A small text file of the repo at ``revision``, read through a throwaway cache (the user's is left alone)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aclbuild-push-") as cache:
        local = api.hf_hub_download(repo_id, path, repo_type="dataset", revision=revision, cache_dir=cache)
        return Path(local).read_text(encoding="utf-8")


def push_folder(
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
    """Validate ``folder``, then make the dataset repo ``repo_id`` equal to it in one commit (or none if equal).

    With ``dry_run`` only the plan is made (reading the remote) and nothing is created or uploaded.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    from aclbuild.validate import validate_repository

    quiet_hub_logs()
    folder = Path(folder)
    problems = validate_repository(folder)
    if problems:
        raise InvalidRepositoryError(str(folder), problems)
    revision = revision or "main"
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if dry_run:
        from huggingface_hub import get_token

        token = token or get_token() or None  # reading a public repo needs none
    else:
        token = resolve_token(token)
    disable_progress_bars()  # our own bar counts bytes over the whole push
    api = HfApi(endpoint=endpoint, token=token or False, library_name="aclbuild")
    started = time.perf_counter()
    with hub_errors(endpoint, repo_id, token, reading=dry_run):
        if dry_run:
            plan = with_retries(lambda: plan_push(api, repo_id, folder, revision))
            return PushResult(repo_id, revision, plan, None, plan.head, None, 0, 0, time.perf_counter() - started)
        with_retries(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
        if revision != "main":
            with_retries(lambda: api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True))
        plan = with_retries(lambda: plan_push(api, repo_id, folder, revision))
    if plan.is_empty:
        return PushResult(repo_id, revision, plan, None, plan.head, None, 0, 0, time.perf_counter() - started)
    def read_head() -> str:
        return api.repo_info(repo_id, repo_type="dataset", revision=revision).sha

    with hub_errors(endpoint, repo_id, token, planned_head=plan.head, read_head=read_head):
        info = _commit(
            api, folder, repo_id, revision, plan, create_pr, message or f"Upload {folder.name} with aclbuild"
        )
    files = len(plan.added) + len(plan.changed)
    return PushResult(repo_id, revision, plan, info.commit_url, info.oid, info.pr_url, files, plan.upload_bytes,
                      time.perf_counter() - started)  # fmt: skip


def push_report(result: PushResult, dry_run: bool = False) -> str:
    """What a push did (or, for a dry run, would do), for the terminal."""
    plan, where = result.plan, f"{result.repo_id}@{result.revision}"
    if dry_run:
        remote = f"at commit {plan.head[:7]}" if plan.head else "does not exist yet"
        lines = [f"dry run for {where} (the remote {remote}):"]
        for verb, paths in (("add", plan.added), ("change", plan.changed), ("delete", plan.deleted)):
            lines += [f"  {verb:<6} {path}" for path in paths]
        lines += [f"  {note}" for note in (plan.card.notes if plan.card else [])]
        lines.append(
            f"  {len(plan.unchanged)} files unchanged; would upload {plan.upload_bytes:,} bytes; nothing was uploaded"
        )
        return "\n".join(lines)
    notes = [f"  {note}" for note in (plan.card.notes if plan.card else [])]
    if result.commit_url is None:
        done = f"{where}: no changes; the remote is already at commit {plan.head[:7]}, no new commit made"
        return "\n".join([done] + notes)
    counts = f"{len(plan.added)} added, {len(plan.changed)} changed, {len(plan.deleted)} deleted"
    kind = " as a pull request" if result.pr_url else ""
    lines = [
        f"pushed {where}{kind}: {result.files} files, {result.bytes:,} bytes in {result.seconds:.1f} s ({counts})",
        f"commit: {result.commit_url}",
    ]
    return "\n".join(lines + ([f"pull request: {result.pr_url}"] if result.pr_url else []) + notes)


def _commit(api, folder: Path, repo_id: str, revision: str, plan: PushPlan, create_pr: bool, message: str):
    """Upload the added and changed files (progress in bytes), then send the one commit that makes them visible."""
    from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete

    from aclbuild.progress import progress_bar

    def source(rel: str) -> str | bytes:
        content = plan.contents[rel]
        return str(content) if isinstance(content, Path) else content

    additions = [CommitOperationAdd(rel, source(rel)) for rel in plan.added + plan.changed]
    with progress_bar(f"uploading to {repo_id}", plan.upload_bytes) as advance:
        for op in additions:  # preupload and LFS transfers go through huggingface_hub's http_backoff: no retry here
            api.preupload_lfs_files(repo_id, [op], repo_type="dataset", revision=revision, create_pr=create_pr,
                                    free_memory=False)  # fmt: skip
            advance(op.upload_info.size, note=op.path_in_repo)
    operations = additions + [CommitOperationDelete(rel) for rel in plan.deleted]

    def send():
        return api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset",
                                 revision=revision, create_pr=create_pr, parent_commit=plan.head)  # fmt: skip

    def landed() -> bool:
        # A commit whose answer was lost may still have landed: then the head moved. Retrying is safe only when
        # it did not (and parent_commit makes the Hub refuse a second copy anyway).
        return api.repo_info(repo_id, repo_type="dataset", revision=revision).sha != plan.head

    def give_up(exc: BaseException) -> bool:
        # A pull request leaves the branch head alone, so a lost answer cannot be told from a lost request.
        return answer_lost(exc) if create_pr else landed()

    try:
        return with_retries(send, give_up=give_up)
    except Exception as exc:
        if create_pr and answer_lost(exc):
            lost = f"the answer to the pull-request commit on {repo_id} was lost; check its pull requests"
            raise HubError(f"{lost} before pushing again (the branch is unchanged at {plan.head[:7]})") from None
        if create_pr or not (is_transient(exc) and landed()):
            raise
        # The head moved: our commit landed and only its answer was lost, or someone else pushed meanwhile.
        head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
        if not plan_push(api, repo_id, folder, revision).is_empty:
            moved = head_after_failure(plan.head, lambda: head)
            raise HubError(f"{repo_id} changed on the Hub while pushing; {moved}") from None
        url = f"{api.endpoint}/datasets/{repo_id}/commit/{head}"
        return CommitInfo(commit_url=url, commit_message=message, commit_description="", oid=head)
