"""Torch-ready complementary-label data for training code, from a repository folder or a Hub id.

CL learners use one of two layouts: one row per (image, CL) pair (most losses), or one row per image with a
multi-hot vector of its CLs (MCL, the VLPL-style baselines). :class:`ClData` keeps the images once and the CLs as
pairs, and gives either layout; its transition matrix is estimated on the training part only. It is a
``torch.utils.data.Dataset`` with the attributes of libcll's datasets (``data``, ``targets``, ``true_targets``,
``num_classes``, ``input_dim``); a split without CLs (the test split) gives (image, true label) rows.

Example (the folder `aclbuild quickstart` builds; a Hub id such as ``my-org/aclcifar10`` loads the same way):
    >>> train = load_cl_dataset("aclbuild-quickstart/digits-uniform", "train", num_cl=1)
    >>> len(train), tuple(train.data.shape), tuple(train.targets.shape), train.input_dim
    (1400, (1400, 8, 8, 3), (1400, 1), 192)
    >>> image, cl, label = train[0]
    >>> test = load_cl_dataset("aclbuild-quickstart/digits-uniform", "test", num_cl=1)
    >>> image, label = test[0]; len(test)
    397
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from aclbuild.errors import InputError, SourceError
from aclbuild.extras import needs_extra

with needs_extra("bench"):  # a core install: load_cl_dataset says which extra brings torch
    import torch
from aclbuild.png import decode_image
from aclbuild.progress import progress_bar


@dataclass(frozen=True, eq=False)
class ClData(torch.utils.data.Dataset):
    """Images stored once, CLs stored as (image, CL) pairs; ``expand`` picks the layout items come in.

    ``images`` is uint8 N x H x W x 3 (or N x 3 x H x W when loaded with ``channels_first``); ``pair_image[p]`` is
    the image row of pair p and ``pair_cl[p]`` its CL. A test split has no pairs (``pair_cl`` is empty): its items
    are (image, true label), one per image, whatever ``expand`` says. ``transform``, when given, is applied to each
    image (the uint8 tensor as stored) in ``__getitem__``.

    libcll's names: ``data`` (the images), ``targets`` (the CLs per image; the true labels when there are no CLs, as
    libcll's test sets), ``true_targets`` (the true labels), ``num_classes`` and ``input_dim`` (C * H * W).
    Example:
        >>> data = ClData(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.tensor([0, 1]), torch.tensor([0, 1]),
        ...               torch.tensor([2, 0]), torch.eye(3), ("a", "b", "c"), num_cl=1, transform=lambda x: x.float())
        >>> len(data), data.targets.tolist(), data.true_targets.tolist(), data.input_dim, data[1][0].dtype
        (2, [[2], [0]], [0, 1], 48, torch.float32)
    """

    images: torch.Tensor
    ord_labels: torch.Tensor  # int64 N, the true labels
    pair_image: torch.Tensor  # int64 P
    pair_cl: torch.Tensor  # int64 P
    transition_matrix: torch.Tensor  # float32 K x K, T[y, j] = P(CL = j | y), from the training part
    class_names: tuple[str, ...]
    num_cl: int
    expand: bool = True
    name: str = ""
    transform: Callable | None = None  # applied to each image in __getitem__

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_cls(self) -> bool:
        """Whether there are CLs (a test split has none: its items are (image, true label))."""
        return len(self.pair_cl) > 0

    @property
    def data(self) -> torch.Tensor:
        """The images (libcll's name)."""
        return self.images

    @property
    def true_targets(self) -> torch.Tensor:
        """The true labels (libcll's name; -1 where unknown)."""
        return self.ord_labels

    @property
    def input_dim(self) -> int:
        """The size of a flattened image, e.g. 3 * 32 * 32 (libcll's name)."""
        return int(np.prod(self.images.shape[1:]))

    @property
    def targets(self) -> torch.Tensor | list[torch.Tensor]:
        """libcll's ``targets``: each image's CLs as an N x m int64 tensor when every image has m of them (with
        ``num_cl=1`` its first CL, N x 1), else a list of N 1-D tensors; the true labels when there are no CLs."""
        if not self.has_cls:
            return self.ord_labels
        order = torch.argsort(self.pair_image, stable=True)
        counts = torch.bincount(self.pair_image, minlength=len(self.images))
        cls = self.pair_cl[order]
        if len(counts) and bool((counts == counts[0]).all()):
            return cls.reshape(len(self.images), int(counts[0]))
        return list(torch.split(cls, counts.tolist()))

    @cached_property
    def multi_hot(self) -> torch.Tensor:
        """N x K float matrix, 1 where class k is a CL of image i (computed once)."""
        hot = torch.zeros(len(self.images), self.num_classes)
        hot[self.pair_image, self.pair_cl] = 1.0
        return hot

    @property
    def cl_labels(self) -> torch.Tensor:
        """The CLs in the chosen layout: the P pair CLs (expand) or the N x K multi-hot matrix."""
        return self.pair_cl if self.expand else self.multi_hot

    def __len__(self) -> int:
        return len(self.pair_cl) if self.expand and self.has_cls else len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        """(image, CL or multi-hot CLs, true label) of row ``i``; (image, true label) when there are no CLs."""
        if not self.has_cls:
            return self._image(i), self.ord_labels[i]
        if self.expand:
            row = self.pair_image[i]
            return self._image(row), self.pair_cl[i], self.ord_labels[row]
        return self._image(i), self.multi_hot[i], self.ord_labels[i]

    def _image(self, row):
        image = self.images[row]
        return image if self.transform is None else self.transform(image)

    def subset(self, indices: torch.Tensor | np.ndarray) -> ClData:
        """The images ``indices`` (in that order) with their pairs; the transition matrix is kept as it is."""
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        new_row = torch.full((len(self.images),), -1, dtype=torch.int64)
        new_row[indices] = torch.arange(len(indices))
        keep = new_row[self.pair_image] >= 0
        return replace(
            self, images=self.images[indices], ord_labels=self.ord_labels[indices],
            pair_image=new_row[self.pair_image[keep]], pair_cl=self.pair_cl[keep],
        )  # fmt: skip

    def drop_noisy(self, fraction: float, seed: int) -> ClData:
        """Drop ``fraction`` of the pairs whose CL equals the true label (the reference's cleaning experiment)."""
        if not 0.0 <= fraction <= 1.0:
            raise InputError(f"--clean-noisy must lie in [0, 1], got {fraction}")
        noisy = torch.nonzero(self.pair_cl == self.ord_labels[self.pair_image]).flatten()
        generator = torch.Generator().manual_seed(seed)
        dropped = noisy[torch.randperm(len(noisy), generator=generator)[: round(fraction * len(noisy))]]
        keep = torch.ones(len(self.pair_cl), dtype=torch.bool)
        keep[dropped] = False
        return replace(self, pair_image=self.pair_image[keep], pair_cl=self.pair_cl[keep])

    @property
    def has_ord_labels(self) -> bool:
        """Whether every image has its true label (-1 marks a missing one)."""
        return bool((self.ord_labels >= 0).all())

    def noise_rate(self) -> float:
        """Fraction of pairs whose CL equals the true label."""
        if not len(self.pair_cl):
            return 0.0
        return float((self.pair_cl == self.ord_labels[self.pair_image]).double().mean())


def estimate_transition(ord_labels: torch.Tensor, pair_image: torch.Tensor, pair_cl: torch.Tensor, k: int):
    """Empirical T: C[y_i, cl] += 1 for every pair, rows normalised (an empty row stays uniform off-diagonal).

    Example:
        >>> estimate_transition(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 0]), 2).tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    from aclbuild.stats import normalise_rows, transition_counts

    pair_true = ord_labels[pair_image]
    known = pair_true >= 0  # images without a true label (-1) say nothing about T
    counts = transition_counts(pair_true[known].numpy(), pair_cl[known].numpy().reshape(-1, 1), k)
    uniform = (np.ones((k, k)) - np.eye(k)) / (k - 1)
    matrix = np.where(counts.sum(axis=1, keepdims=True) > 0, normalise_rows(counts), uniform)
    return torch.from_numpy(matrix).float()


def random_cl_count_probabilities(num_classes: int) -> np.ndarray:
    """P(an image gets s CLs), s = 1 .. K-1: C(K-1, s) / (2^(K-1) - 1), libcll's ``num_cl=0`` distribution.

    It is the size of a uniformly drawn non-empty subset of the K - 1 wrong classes. Example:
        >>> random_cl_count_probabilities(3).tolist()   # s = 1 or 2 of the 2 wrong classes
        [0.6666666666666666, 0.3333333333333333]
    """
    from math import comb

    weights = np.array([comb(num_classes - 1, s) for s in range(1, num_classes)], dtype=np.float64)
    return weights / (2 ** (num_classes - 1) - 1)


def with_random_cls(data: ClData, matrix: np.ndarray, seed: int) -> ClData:
    """``data`` with new CLs, as libcll's ``num_cl=0``: each image gets s ~ :func:`random_cl_count_probabilities`
    CLs, drawn without replacement from row ``matrix[y]`` of its true label y (seeded by ``seed``).

    The stored CLs are replaced (the images and true labels are kept); ``num_cl`` becomes 0, meaning "random".
    Raises InputError when an image lacks its true label or a row of ``matrix`` has fewer than K - 1 classes.
    Example:
        >>> data = ClData(torch.zeros(4, 1, 1, 3, dtype=torch.uint8), torch.tensor([0, 1, 2, 0]), torch.zeros(0,
        ...               dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.eye(3), ("a", "b", "c"), 3)
        >>> drawn = with_random_cls(data, (np.ones((3, 3)) - np.eye(3)) / 2, seed=0)
        >>> bool((drawn.pair_cl != drawn.ord_labels[drawn.pair_image]).all()), drawn.num_cl
        (True, 0)
    """
    k = data.num_classes
    if not data.has_ord_labels:
        raise InputError("--num-cl 0 draws synthetic CLs from the true labels, but some images have none")
    if int((matrix > 0).sum(axis=1).min()) < k - 1:
        raise InputError(f"--num-cl 0 draws up to {k - 1} distinct CLs per image: every row of T needs {k - 1} classes")
    rng = np.random.default_rng(seed)
    n = len(data.ord_labels)
    counts = rng.choice(np.arange(1, k), size=n, p=random_cl_count_probabilities(k))
    # Gumbel top-s: sorting log p + Gumbel noise draws classes one by one without replacement, in proportion to p
    with np.errstate(divide="ignore"):
        keys = np.log(matrix[data.ord_labels.numpy()]) + rng.gumbel(size=(n, k))
    ranked = np.argsort(-keys, axis=1, kind="stable")
    keep = np.arange(k)[None, :] < counts[:, None]
    pair_image = torch.from_numpy(np.nonzero(keep)[0].astype(np.int64))
    pair_cl = torch.from_numpy(ranked[keep].astype(np.int64))
    return replace(data, pair_image=pair_image, pair_cl=pair_cl, num_cl=0)


def _read_columns(repo_or_dir: str, split: str, with_images: bool):
    """(rows of one split, decoded by :func:`aclbuild.repository.decode_rows`; class names; pretty name)."""
    from aclbuild.cards import card_pretty_name
    from aclbuild.repository import decode_rows, is_spml_repository, read_features, read_table

    folder = Path(repo_or_dir)
    if folder.is_dir():
        if is_spml_repository(folder):
            raise InputError(f"{folder} is a single-positive multi-label repository, not a CL one: benchmark it "
                             "with --task spml")  # fmt: skip
        columns = ["images", "ord_labels", "cl_labels"] if with_images else ["ord_labels", "cl_labels"]
        rows = decode_rows(read_table(folder, split, columns))
        names = tuple(read_features(folder)["ord_labels"].names)
        return rows, names, card_pretty_name(folder)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_or_dir):
        raise SourceError(f"{repo_or_dir} is neither a repository folder nor a Hub dataset id (org/name)")
    return _read_hub(repo_or_dir, split, with_images)


def _read_hub(repo_id: str, split: str, with_images: bool):
    import datasets

    from aclbuild.repository import decode_rows

    pretty_name = _hub_pretty_name(repo_id)
    try:
        dataset = datasets.load_dataset(repo_id, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a missing or foreign repository
        raise SourceError(f"cannot load {repo_id!r} split {split!r}: {' '.join(str(exc).split())[:300]}") from None
    missing = {"ord_labels", "cl_labels"} - set(dataset.column_names)
    if "observed_label" in dataset.column_names:
        raise InputError(f"{repo_id} is a single-positive multi-label dataset, not a CL one: benchmark it with "
                         "--task spml")  # fmt: skip
    if missing:
        lacking = " or ".join(sorted(missing))
        raise SourceError(f"{repo_id} has no {lacking} column; is it a complementary-label dataset?")
    names = tuple(dataset.features["ord_labels"].names)
    columns = ["images", "ord_labels", "cl_labels"] if with_images else ["ord_labels", "cl_labels"]
    dataset = dataset.select_columns(columns)
    if with_images:
        dataset = dataset.cast_column("images", datasets.Image(decode=False))  # PNG bytes, decoded below
    return decode_rows(dataset.with_format("arrow")[:]), names, pretty_name


def _hub_pretty_name(repo_id: str) -> str:
    """The card's ``pretty_name`` (else the repository's name), asked of the Hub before datasets loads the repo:
    datasets would fall back on a cached copy, silently, when the Hub refuses the token. A refusal or a missing repo
    is one line; an unreachable Hub is said on stderr, and datasets then uses its cached copy if it has one."""
    from huggingface_hub import HfApi, constants, get_token

    from aclbuild.errors import AuthError
    from aclbuild.hub_errors import describe_hub_error, quiet_hub_logs, scrub

    quiet_hub_logs()
    token = get_token()
    try:
        info = HfApi().dataset_info(repo_id, token=token)
    except Exception as exc:  # noqa: BLE001 - sorted out by describe_hub_error
        error = describe_hub_error(exc, constants.ENDPOINT, repo_id, has_token=bool(token), reading=True)
        if isinstance(error, AuthError) or "not found" in str(error):
            raise type(error)(scrub(str(error), token)) from None
        print(f"warning: {scrub(str(error), token)}; using the copy of {repo_id} that datasets cached, if any",
              file=sys.stderr)  # fmt: skip
        return repo_id.split("/")[-1]
    return getattr(info.card_data, "pretty_name", None) or repo_id.split("/")[-1]


def _decode_all(images: list[bytes], split: str) -> np.ndarray:
    with progress_bar(f"decoding {split} images", len(images)) as advance:
        decoded = []
        for data in images:
            decoded.append(decode_image(data))
            advance()
    return np.stack(decoded)


def _pairs(cl_labels: np.ndarray | None, num_cl: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if cl_labels is None:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    if num_cl > cl_labels.shape[1]:
        raise InputError(f"num_cl={num_cl} is larger than the {cl_labels.shape[1]} CLs per image stored in {split}")
    kept = torch.from_numpy(cl_labels[:, :num_cl].copy())
    return torch.arange(len(kept)).repeat_interleave(num_cl), kept.reshape(-1)


def load_cl_dataset(
    repo_or_dir: str | Path,
    split: str = "train",
    num_cl: int = 3,
    expand: bool = True,
    channels_first: bool = False,
    train_indices: np.ndarray | None = None,
    transform: Callable | None = None,
) -> ClData:
    """Load ``split`` of a repository folder or Hub id as a torch Dataset, keeping each image's first ``num_cl``
    CLs (``num_cl=1``: the first CL only, as libcll).

    A split without CLs (the test split) gives (image, true label) items, one per image. ``transform`` is applied
    to each image in ``__getitem__``. The transition matrix is estimated on the ``train`` split's pairs, restricted
    to ``train_indices`` when given (e.g. the 90% that is trained on), whichever split is loaded. Raises InputError,
    naming the argument, when ``num_cl`` is not an integer >= 1 or exceeds what is stored, or ``transform`` is not
    callable.
    """
    if isinstance(num_cl, bool) or not isinstance(num_cl, (int, np.integer)):
        raise InputError(f"num_cl must be an integer, got {num_cl!r}")
    if num_cl < 1:
        raise InputError(f"num_cl must be at least 1 (the first num_cl CLs of each image), got {num_cl}")
    if transform is not None and not callable(transform):
        raise InputError(f"transform must be callable (applied to each image), got {transform!r}")
    if not isinstance(split, str) or not split:
        raise InputError(f"split must be a split name such as 'train' or 'test', got {split!r}")
    num_cl = int(num_cl)
    source = str(repo_or_dir)
    rows, names, pretty = _read_columns(source, split, with_images=True)
    pair_image, pair_cl = _pairs(rows.cl_labels, num_cl, split)
    if split == "train":
        train_ord, train_image, train_cl = torch.from_numpy(rows.ord_labels), pair_image, pair_cl
    else:
        train_rows, _, _ = _read_columns(source, "train", with_images=False)
        train_ord = torch.from_numpy(train_rows.ord_labels)
        train_image, train_cl = _pairs(train_rows.cl_labels, num_cl, "train")
    if train_indices is not None:
        chosen = torch.zeros(len(train_ord), dtype=torch.bool)
        chosen[torch.as_tensor(np.asarray(train_indices), dtype=torch.int64)] = True
        train_image, train_cl = train_image[chosen[train_image]], train_cl[chosen[train_image]]
    if len(train_cl) == 0:
        raise InputError(f"{source}: the train split holds no complementary labels to estimate T from")
    pixels = torch.from_numpy(_decode_all(rows.images, split))
    if channels_first:
        pixels = pixels.permute(0, 3, 1, 2).contiguous()
    return ClData(
        images=pixels, ord_labels=torch.from_numpy(rows.ord_labels), pair_image=pair_image, pair_cl=pair_cl,
        transition_matrix=estimate_transition(train_ord, train_image, train_cl, len(names)),
        class_names=names, num_cl=num_cl, expand=expand, name=pretty, transform=transform,
    )  # fmt: skip
