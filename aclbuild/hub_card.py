"""The card a push uploads: the folder's own card, with the repo it goes to and the remote's other configs.

A Hub repo may hold configs besides aclbuild's ``default`` (e.g. one added with ``push_to_hub(config_name="small")``).
Their ``configs`` and ``dataset_info`` entries are kept in the pushed card's YAML, in the form ``datasets`` writes
for several configs (``dataset_info`` a list, each entry led by ``config_name``, both lists sorted by name); the
default config's entries come from the folder. The usage example names the target repo (a folder built without
``--repo-id`` says ``YOUR_ORG/<variant name>``). The folder's files are only read.

Example:
    >>> data = {"dataset_info": [{"config_name": "default", "splits": []}, {"config_name": "small", "splits": []}],
    ...         "configs": [{"config_name": "default", "data_files": "data/*"},
    ...                     {"config_name": "small", "data_files": [{"split": "train", "path": "small/train-*"}]}]}
    >>> other_config_names(data), default_view(data)["dataset_info"]
    (['small'], {'splits': []})
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_CONFIG = "default"
PLACEHOLDER_ORG = "YOUR_ORG"  # the card's usage example says YOUR_ORG/<variant name> until the repo is known
_USAGE_REPO = re.compile(r"""load_dataset\(\s*["']([^"']+)["']""")


@dataclass
class PushedCard:
    """The README text to upload, what was filled in (for the push report), and the remote's other configs."""

    text: str
    notes: list[str] = field(default_factory=list)
    other_configs: list[str] = field(default_factory=list)
    other_patterns: list[str] = field(default_factory=list)  # data_files of the other configs: never deleted


def config_infos(data: dict) -> dict[str, dict]:
    """``dataset_info`` by config name, from either form datasets writes (one mapping, or a list of them).

    Example:
        >>> config_infos({"dataset_info": {"splits": []}})
        {'default': {'splits': []}}
    """
    info = data.get("dataset_info")
    if isinstance(info, dict):
        return {info.get("config_name", DEFAULT_CONFIG): info}
    if isinstance(info, list):
        return {entry.get("config_name", DEFAULT_CONFIG): entry for entry in info if isinstance(entry, dict)}
    return {}


def config_entries(data: dict) -> dict[str, dict]:
    """The ``configs`` list by config name (entries without a name are left out, as datasets refuses them)."""
    configs = data.get("configs")
    if not isinstance(configs, list):
        return {}
    return {c["config_name"]: c for c in configs if isinstance(c, dict) and isinstance(c.get("config_name"), str)}


def other_config_names(data: dict) -> list[str]:
    """The configs of a card's YAML besides ``default``, sorted."""
    return sorted((set(config_infos(data)) | set(config_entries(data))) - {DEFAULT_CONFIG})


def default_view(data: dict) -> dict:
    """The card YAML as if the repo held only its default config (how build writes it): what verify checks.

    Example:
        >>> default_view({"license": "mit", "configs": [{"config_name": "small", "data_files": "s/*"}]})
        {'license': 'mit'}
    """
    view = {k: v for k, v in data.items() if k not in ("dataset_info", "configs")}
    info = config_infos(data).get(DEFAULT_CONFIG)
    if info is not None:
        view["dataset_info"] = {k: v for k, v in info.items() if k != "config_name"}
    entry = config_entries(data).get(DEFAULT_CONFIG)
    if entry is not None:
        view["configs"] = [entry]
    return view


def data_file_patterns(entry: dict) -> list[str]:
    """The path patterns of one ``configs`` entry (``data_files`` as a string, a list, or split/path mappings).

    Example:
        >>> data_file_patterns({"data_files": [{"split": "train", "path": ["a/*", "b/*"]}, "c.csv"]})
        ['a/*', 'b/*', 'c.csv']
    """
    files = entry.get("data_files")
    items = files if isinstance(files, list) else [files]
    patterns = []
    for item in items:
        paths = item.get("path") if isinstance(item, dict) else item
        patterns += [p for p in (paths if isinstance(paths, list) else [paths]) if isinstance(p, str)]
    return patterns


def merged_yaml(local: dict, remote: dict) -> tuple[dict, list[str]]:
    """The folder's card YAML with the remote's other configs kept, as datasets writes several configs.

    Example:
        >>> local = {"dataset_info": {"splits": [1]}, "configs": [{"config_name": "default", "data_files": "d/*"}]}
        >>> remote = {"dataset_info": {"config_name": "small", "splits": [2]},
        ...           "configs": [{"config_name": "small", "data_files": "s/*"}]}
        >>> merged, others = merged_yaml(local, remote)
        >>> merged["dataset_info"]
        [{'config_name': 'default', 'splits': [1]}, {'config_name': 'small', 'splits': [2]}]
        >>> [c["config_name"] for c in merged["configs"]], others
        (['default', 'small'], ['small'])
    """
    others = other_config_names(remote)
    if not others:
        return dict(local), []
    infos = {**config_infos(remote), **config_infos(local)}
    entries = {**config_entries(remote), **config_entries(local)}
    merged = dict(local)  # key order stays the folder's: dataset_info, then configs
    if infos:
        merged["dataset_info"] = [
            {"config_name": name, **{k: v for k, v in info.items() if k != "config_name"}}
            for name, info in sorted(infos.items())
        ]
    if entries:
        merged["configs"] = [
            {"config_name": name, **{k: v for k, v in entry.items() if k != "config_name"}}
            for name, entry in sorted(entries.items())
        ]
    return merged, others


def fill_repo_id(body: str, repo_id: str, recorded: str | None) -> tuple[str, list[str]]:
    """``body`` with the repo ids its usage example names (and ``recorded``, the build's) replaced by ``repo_id``.

    Returns the new body and the real repo ids that were replaced (the ``YOUR_ORG/...`` placeholder is not one).

    Example:
        >>> fill_repo_id('load_dataset("YOUR_ORG/aclcifar10")', "me/aclcifar10", None)
        ('load_dataset("me/aclcifar10")', [])
        >>> fill_repo_id('load_dataset("org/x") at https://hf.co/datasets/org/x', "me/x", "org/x")
        ('load_dataset("me/x") at https://hf.co/datasets/me/x', ['org/x'])
    """
    named = set(_USAGE_REPO.findall(body)) | ({recorded} if recorded else set())
    replaced = []
    for old in sorted(named - {repo_id}):
        body = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", repo_id, body)
        if not old.startswith(PLACEHOLDER_ORG + "/"):
            replaced.append(old)
    return body, replaced


def pushed_card(local_text: str, remote_text: str | None, repo_id: str, recorded: str | None) -> PushedCard:
    """The README to upload to ``repo_id``: the folder's card (``local_text``) with the repo id filled in and the
    other configs of the remote card (``remote_text``, None when the repo has none) kept."""
    from huggingface_hub import DatasetCard

    card = DatasetCard(local_text)
    remote = _card_yaml(remote_text)
    merged, others = merged_yaml(card.data.to_dict(), remote)
    body, replaced = fill_repo_id(card.text, repo_id, recorded)
    notes = [f"the card named {old}; the pushed card names {repo_id}" for old in replaced]
    if others:
        for key in ("dataset_info", "configs"):
            if key in merged:
                card.data[key] = merged[key]
        notes.append(f"kept the repo's other configs: {', '.join(others)}")
    if others or not local_text.endswith(card.text):
        card.text = body
        text = str(card)  # the YAML re-dumped as huggingface_hub (and so datasets) writes it
    else:
        text = local_text[: len(local_text) - len(card.text)] + body  # the folder's YAML, byte for byte
    entries = config_entries(remote)
    patterns = [p for name in others for p in data_file_patterns(entries.get(name, {}))]
    return PushedCard(text, notes, others, patterns)


def _card_yaml(text: str | None) -> dict:
    """The YAML of a card's text as a dict (empty when there is none or it does not parse)."""
    from huggingface_hub import DatasetCard

    if not text:
        return {}
    try:
        return DatasetCard(text).data.to_dict()
    except Exception:  # noqa: BLE001 - an unreadable remote card has no configs to keep
        return {}
