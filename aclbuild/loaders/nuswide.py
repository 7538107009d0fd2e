"""NUS-WIDE as a multi-label source, in the formatted files the VLPL README distributes: a folder with
``formatted_{train,val}_images.npy`` (each image's path under the images folder) and
``formatted_{train,val}_labels.npy`` (an images x 81 0/1 matrix), and the images folder (``Flickr/`` beside them
by default, or ``Flickr.zip``).

The 81 classes are NUS-WIDE's ``Concepts81.txt`` in its (alphabetical) order, the columns' order. Rows are kept as the
files give them, an image without a positive too (it gets no observed label, as in the SPML benchmark). Part
``train`` is the benchmark's training part, ``val`` its test set. A record's name is the image's path from the file.
Only plain (non-pickled) ``.npy`` arrays are read: a file of Python objects is refused rather than unpickled.

Example:
    >>> part = read_nuswide("data/nuswide", "train")   # doctest: +SKIP
    >>> len(part.class_names)                          # doctest: +SKIP
    81
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.observed import check_label_matrix
from aclbuild.loaders.spml_source import SpmlPart, open_tree

NUSWIDE_CLASSES = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars", "castle", "cat",
    "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog", "earthquake", "elk", "fire", "fish", "flags",
    "flowers", "food", "fox", "frost", "garden", "glacier", "grass", "harbor", "horses", "house", "lake", "leaf", "map",
    "military", "moon", "mountain", "nighttime", "ocean", "person", "plane", "plants", "police", "protest",
    "railroad", "rainbow", "reflection", "road", "rocks", "running", "sand", "sign", "sky", "snow", "soccer", "sports",
    "statue", "street", "sun", "sunset", "surf", "swimmers", "tattoo", "temple", "tiger", "tower", "town", "toy",
    "train", "tree", "valley", "vehicle", "water", "waterfall", "wedding", "whales", "window", "zebra",
)  # fmt: skip
NUSWIDE_PARTS = ("train", "val")


def load_npy(path: Path) -> np.ndarray:
    """A plain ``.npy`` array; missing, corrupt or pickled: one SourceError line.

    Example:
        >>> load_npy(Path("/no/formatted_train_labels.npy"))
        Traceback (most recent call last):
        aclbuild.errors.SourceError: /no/formatted_train_labels.npy does not exist; ...
    """
    if not path.is_file():
        raise SourceError(f"{path} does not exist; it is one of VLPL's formatted NUS-WIDE files")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise SourceError(f"{path} holds Python objects (a pickle), which are not read; save it as a plain "
                              f"string or number array (np.save(path, array.astype(str)))") from None  # fmt: skip
        raise SourceError(f"{path} is not a readable .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path} is not a readable .npy array ({exc})") from None


def read_nuswide(folder: str | Path, part: str = "train", images_folder: str | Path | None = None,
                 images: bool = True) -> SpmlPart:  # fmt: skip
    """The images of ``part`` (train or val) and their labels from VLPL's formatted files in ``folder``;
    ``images_folder`` (default ``folder/Flickr``, else ``folder/Flickr.zip``) holds the images at the listed paths.
    ``images=False`` reads the labels alone."""
    if part not in NUSWIDE_PARTS:
        raise SourceError(f"NUS-WIDE's formatted files have parts {', '.join(NUSWIDE_PARTS)}, not {part!r}")
    folder = Path(folder).expanduser()
    names_file, labels_file = (folder / f"formatted_{part}_{kind}.npy" for kind in ("images", "labels"))
    paths = load_npy(names_file)
    if paths.ndim != 1 or paths.dtype.kind not in "US" or not len(paths):
        raise SourceError(f"{names_file} must be a non-empty list of image paths, got {paths.dtype} {paths.shape}")
    labels = check_label_matrix(load_npy(labels_file), str(labels_file))
    if labels.shape != (len(paths), len(NUSWIDE_CLASSES)):
        raise SourceError(f"{labels_file} is {labels.shape[0]} x {labels.shape[1]}; expected {len(paths)} images "
                          f"(as {names_file.name}) x {len(NUSWIDE_CLASSES)} classes")  # fmt: skip
    names = [p.decode() if isinstance(p, bytes) else str(p) for p in paths.tolist()]
    tree = None
    if images:
        if images_folder is None:
            images_folder = folder / "Flickr" if (folder / "Flickr").is_dir() else folder / "Flickr.zip"
        tree = open_tree(images_folder, "the NUS-WIDE images folder (Flickr/ or Flickr.zip)")
        tree.find_root(("Flickr/", ""), names, f"the images at the paths of {names_file.name}")
        missing = next((n for n in names if not tree.has(n)), None)
        if missing is not None:
            raise SourceError(f"{tree.label} has no {tree.root}{missing}, which {names_file.name} lists")
    return SpmlPart(NUSWIDE_CLASSES, names, labels, tree, list(names))
