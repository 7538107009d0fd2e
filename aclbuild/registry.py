"""The bases (source image sets) and the dataset variants built on them.

Facts here follow ../shared/reference/sources.md exactly: label index = position in the class lists.

Example:
    >>> from aclbuild.registry import get_variant
    >>> v = get_variant("aclcifar10-r")
    >>> v.pretty_name, v.base.num_classes
    ('ACLCIFAR10-R', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

from aclbuild.errors import UnknownNameError

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR20_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit, vegetables and mushrooms",
    "household electrical devices", "household furniture", "insects", "large carnivores and bear",
    "large man-made outdoor things", "large natural outdoor scenes", "large omnivores and herbivores",
    "medium-sized mammals", "non-insect invertebrates", "people", "reptiles", "small mammals", "trees",
    "transportation vehicles", "non-transportation vehicles",
)  # fmt: skip
CIFAR20_LONG_NAMES = (
    "aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables and mushrooms",
    "electrical devices", "furniture", "insects", "carnivores and bears", "man-made buildings", "natural scenes",
    "omnivores and herbivores", "medium-sized mammals", "invertebrates", "people", "reptiles", "small mammals",
    "trees", "transportation vehicles", "non-transport vehicles",
)  # fmt: skip

MIN10_CLASSES = (
    ("n02281406", "sulphur butterfly"), ("n02769748", "backpack"), ("n02963159", "cardigan"),
    ("n03617480", "kimono"), ("n03706229", "magnetic compass"), ("n03838899", "oboe"), ("n04133789", "sandal"),
    ("n04456115", "torch"), ("n07873807", "pizza"), ("n09193705", "alp"),
)  # fmt: skip
MIN20_CLASSES = (
    ("n01644900", "tailed frog"), ("n01770393", "scorpion"), ("n01944390", "snail"),
    ("n01983481", "american lobster"), ("n02123045", "tabby"), ("n02123394", "persian cat"),
    ("n02423022", "gazelle"), ("n02481823", "chimpanzee"), ("n02788148", "bannister"), ("n02795169", "barrel"),
    ("n03026506", "christmas stocking"), ("n03424325", "gasmask"), ("n03544143", "hourglass"),
    ("n03584254", "ipod"), ("n04149813", "scoreboard"), ("n04251144", "snorkel"),
    ("n04366367", "suspension bridge"), ("n04456115", "torch"), ("n04465501", "tractor"),
    ("n04486054", "triumphal arch"),
)  # fmt: skip


@dataclass(frozen=True)
class Archive:
    """An official source archive: where to fetch it and the MD5 it must have."""

    filename: str
    url: str
    md5: str


CIFAR10_ARCHIVE = Archive(
    "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)  # fmt: skip
CIFAR100_ARCHIVE = Archive(
    "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
)  # fmt: skip
TINYIMAGENET_ARCHIVE = Archive(
    "tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4553bd9d2ba"
)


@dataclass(frozen=True)
class FileSet:
    """Official files fetched one by one into one folder: the MNIST family ships four gzip-compressed IDX files
    (train images and labels, test images and labels) instead of one archive."""

    folder: str  # the cache sub-folder `--download` fills, and the sub-path under $ACLBUILD_MIRROR
    title: str  # what users call the set
    files: tuple[Archive, ...]

    @property
    def filename(self) -> str:
        """What messages ask the user to point at (a folder, not one file)."""
        return f"{self.title} IDX folder (the four *-idx*-ubyte.gz files)"


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_files(folder: str, title: str, url: str, md5s: tuple[str, str, str, str]) -> FileSet:
    """The four IDX files of one MNIST-family set at ``url`` (a folder URL), with torchvision's MD5s."""
    return FileSet(folder, title, tuple(Archive(f"{n}.gz", f"{url}{n}.gz", m) for n, m in zip(IDX_FILES, md5s)))


# URLs and MD5s as torchvision's MNIST / FashionMNIST / KMNIST `resources` list them.
MNIST_FILES = _idx_files("mnist", "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/", (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432", "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
))  # fmt: skip
FMNIST_FILES = _idx_files("fmnist", "Fashion-MNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe", "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
))  # fmt: skip
KMNIST_FILES = _idx_files("kmnist", "KMNIST", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", (
    "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344", "5c965bf0a639b31b8f53240b1b52f4d7",
    "7320c461ea6c1c855c0b718fb2a4b134",
))  # fmt: skip

FMNIST_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # romanised hiragana, torchvision's order

MNIST_CITATION = """@article{lecun1998gradient,
  title   = {Gradient-Based Learning Applied to Document Recognition},
  author  = {LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal = {Proceedings of the IEEE},
  volume  = {86},
  number  = {11},
  pages   = {2278--2324},
  year    = {1998}
}"""
FMNIST_CITATION = """@article{xiao2017fashion,
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  author  = {Xiao, Han and Rasul, Kashif and Vollgraf, Roland},
  journal = {arXiv preprint arXiv:1708.07747},
  year    = {2017}
}"""
CIFAR_CITATION = """@techreport{krizhevsky2009learning,
  title       = {Learning Multiple Layers of Features from Tiny Images},
  author      = {Krizhevsky, Alex},
  institution = {University of Toronto},
  year        = {2009}
}"""
TINYIMAGENET_CITATION = """@article{le2015tiny,
  title   = {Tiny ImageNet Visual Recognition Challenge},
  author  = {Le, Ya and Yang, Xuan},
  journal = {CS 231N},
  year    = {2015}
}"""
DIGITS_CITATION = """@misc{alpaydin1998optical,
  title        = {Optical Recognition of Handwritten Digits},
  author       = {Alpaydin, E. and Kaynak, C.},
  howpublished = {UCI Machine Learning Repository},
  year         = {1998}
}"""
KMNIST_CITATION = """@article{clanuwat2018deep,
  title   = {Deep Learning for Classical Japanese Literature},
  author  = {Clanuwat, Tarin and Bober-Irizar, Mikel and Kitamoto, Asanobu and Lamb, Alex and Yamamoto, Kazuaki
             and Ha, David},
  journal = {arXiv preprint arXiv:1812.01718},
  year    = {2018},
  note    = {KMNIST Dataset (created by CODH), adapted from Kuzushiji Dataset (created by NIJL and others),
             doi:10.20676/00000341}
}"""


@dataclass(frozen=True)
class Base:
    """A source image set: its classes, image size, and where train and test images come from."""

    name: str
    pretty_name: str
    class_names: tuple[str, ...]  # published names (ClassLabel, card)
    long_names: tuple[str, ...]  # names the labeling prompt uses with --long-label, and the label CSVs
    image_size: int  # images are image_size x image_size x 3 uint8
    num_train: int
    num_test: int
    train_source: str
    test_source: str
    archive: Archive | FileSet | None  # None: embedded, nothing to download
    source_dataset: str  # card YAML source_datasets entry
    license: str
    wnids: tuple[str, ...] = ()
    short_names_collide: bool = False  # cifar20: the last words collide, so prompts always use long names
    # Whether every training image has its own file name, so a repeated name means an image went in twice.
    # False for cifar20: CIFAR-100's train split names two images baby_s_000333.png (rows are told apart by position).
    unique_names: bool = True
    citation: str = ""  # BibTeX of the source images, for the card (empty: the card cites the CL benchmarks only)
    # For the card, without counts (the card counts the split it describes): where each split's images come from,
    # who made the source images, and the terms the images keep whatever the labels' licence.
    train_origin: str = ""
    test_origin: str = ""
    producers: str = ""
    image_terms: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def short_names(self) -> tuple[str, ...]:
        """Last word of each long name ("sulphur butterfly" -> "butterfly"), as the prompts use by default."""
        return tuple(name.split()[-1] for name in self.long_names)

    def prompt_names(self, long_label: bool) -> tuple[str, ...]:
        return self.long_names if long_label or self.short_names_collide else self.short_names

    def class_index(self, name: str) -> int:
        """Index of a class given by its published, long or (unambiguous) short name; raises on anything else."""
        for names in (self.class_names, self.long_names):
            if name in names:
                return names.index(name)
        if not self.short_names_collide and name in self.short_names:
            return self.short_names.index(name)
        raise UnknownNameError(
            f"class {name!r} is not a class of base {self.name}; expected one of: {', '.join(self.long_names)}"
        )


_GREY = "28x28 greyscale stored as RGB (three equal channels)"
_CIFAR_PRODUCERS = (
    "Alex Krizhevsky, Vinod Nair and Geoffrey Hinton (University of Toronto), from the 80 Million Tiny Images web "
    "collection"
)
_CIFAR_TERMS = (
    "the CIFAR images are distributed by their authors (https://www.cs.toronto.edu/~kriz/cifar.html) without a "
    "licence of their own; cite Krizhevsky (2009) when you use them"
)
_TIN_TRAIN = "TinyImageNet-200's training images of the {} classes' wnids"
_TIN_TEST = "TinyImageNet-200's validation images of the same wnids"
_TIN_PRODUCERS = "Stanford's CS231n course (Ya Le and Xuan Yang), from ImageNet's web images"
_TIN_TERMS = (
    "TinyImageNet images are ImageNet images and follow ImageNet's terms of access "
    "(https://image-net.org/download.php): non-commercial research and educational use only"
)
BASES: dict[str, Base] = {
    "cifar10": Base(
        "cifar10", "CIFAR10", CIFAR10_NAMES, CIFAR10_NAMES, 32, 50_000, 10_000,
        "the 50,000 CIFAR-10 training images, in the archive's order",
        "the 10,000 CIFAR-10 test images", CIFAR10_ARCHIVE, "extended|cifar10", "mit", citation=CIFAR_CITATION,
        train_origin="CIFAR-10's training set, in the archive's order", test_origin="CIFAR-10's test set",
        producers=_CIFAR_PRODUCERS, image_terms=_CIFAR_TERMS,
    ),
    "cifar20": Base(
        "cifar20", "CIFAR20", CIFAR20_NAMES, CIFAR20_LONG_NAMES, 32, 50_000, 10_000,
        "the 50,000 CIFAR-100 training images, in the archive's order, labelled by their coarse (superclass) label",
        "the 10,000 CIFAR-100 test images, coarse labels", CIFAR100_ARCHIVE, "extended|cifar100", "mit",
        short_names_collide=True, unique_names=False, citation=CIFAR_CITATION,
        train_origin="CIFAR-100's training set, in the archive's order, each image labelled by its coarse (superclass) "
        "label", test_origin="CIFAR-100's test set, coarse labels", producers=_CIFAR_PRODUCERS,
        image_terms=_CIFAR_TERMS,
    ),
    "min10": Base(
        "min10", "MicroImageNet10", tuple(n for _, n in MIN10_CLASSES), tuple(n for _, n in MIN10_CLASSES), 64,
        5_000, 500, "the 500 TinyImageNet-200 training images of each of the 10 wnids (5,000)",
        "the 50 TinyImageNet-200 validation images of each wnid (500)", TINYIMAGENET_ARCHIVE,
        "extended|other-tiny-imagenet-200", "other", wnids=tuple(w for w, _ in MIN10_CLASSES),
        citation=TINYIMAGENET_CITATION, train_origin=_TIN_TRAIN.format(10), test_origin=_TIN_TEST,
        producers=_TIN_PRODUCERS, image_terms=_TIN_TERMS,
    ),
    "min20": Base(
        "min20", "MicroImageNet20", tuple(n for _, n in MIN20_CLASSES), tuple(n for _, n in MIN20_CLASSES), 64,
        10_000, 1_000, "the 500 TinyImageNet-200 training images of each of the 20 wnids (10,000)",
        "the 50 TinyImageNet-200 validation images of each wnid (1,000)", TINYIMAGENET_ARCHIVE,
        "extended|other-tiny-imagenet-200", "other", wnids=tuple(w for w, _ in MIN20_CLASSES),
        citation=TINYIMAGENET_CITATION, train_origin=_TIN_TRAIN.format(20), test_origin=_TIN_TEST,
        producers=_TIN_PRODUCERS, image_terms=_TIN_TERMS,
    ),
    "digits": Base(
        "digits", "Digits", tuple(str(d) for d in range(10)), tuple(str(d) for d in range(10)), 8, 1_400, 397,
        "1,400 of scikit-learn's 1,797 8x8 handwritten digits (a permutation with seed 0, first 1,400)",
        "the other 397 digits of the same permutation", None, "extended|other-uci-optical-digits", "cc-by-4.0",
        citation=DIGITS_CITATION, train_origin="scikit-learn's 8x8 handwritten digits (load_digits), the first 1,400 "
        "of a permutation with seed 0", test_origin="the other 397 digits of the same permutation",
        producers="E. Alpaydin and C. Kaynak (UCI Machine Learning Repository), from handwritten forms",
        image_terms="the digits are the UCI set's, under CC BY 4.0",
    ),
    "mnist": Base(
        "mnist", "MNIST", tuple(str(d) for d in range(10)), tuple(str(d) for d in range(10)), 28, 60_000, 10_000,
        f"the 60,000 MNIST training images, in the IDX file's order, {_GREY}", f"the 10,000 MNIST test images, {_GREY}",
        MNIST_FILES, "extended|mnist", "cc-by-sa-3.0", citation=MNIST_CITATION,
        train_origin=f"MNIST's training set, in the IDX file's order, {_GREY}",
        test_origin=f"MNIST's test set, {_GREY}",
        producers="Yann LeCun, Corinna Cortes and Christopher J.C. Burges, from NIST's handwritten digits",
        image_terms="the MNIST images keep their own terms (CC BY-SA 3.0, as published on the Hub)",
    ),
    "fmnist": Base(
        "fmnist", "Fashion-MNIST", FMNIST_NAMES, FMNIST_NAMES, 28, 60_000, 10_000,
        f"the 60,000 Fashion-MNIST training images, in the IDX file's order, {_GREY}",
        f"the 10,000 Fashion-MNIST test images, {_GREY}", FMNIST_FILES, "extended|fashion_mnist", "mit",
        citation=FMNIST_CITATION, train_origin=f"Fashion-MNIST's training set, in the IDX file's order, {_GREY}",
        test_origin=f"Fashion-MNIST's test set, {_GREY}", producers="Zalando Research, from Zalando's article images",
        image_terms="the Fashion-MNIST images are Zalando's, published under the MIT licence",
    ),
    "kmnist": Base(
        "kmnist", "Kuzushiji-MNIST", KMNIST_NAMES, KMNIST_NAMES, 28, 60_000, 10_000,
        f"the 60,000 Kuzushiji-MNIST training images, in the IDX file's order, {_GREY}",
        f"the 10,000 Kuzushiji-MNIST test images, {_GREY}", KMNIST_FILES, "extended|kmnist", "cc-by-sa-4.0",
        citation=KMNIST_CITATION, train_origin=f"Kuzushiji-MNIST's training set, in the IDX file's order, {_GREY}",
        test_origin=f"Kuzushiji-MNIST's test set, {_GREY}",
        producers="the ROIS-DS Center for Open Data in the Humanities (CODH), from the Kuzushiji dataset of the "
        "National Institute of Japanese Literature",
        image_terms="the KMNIST images keep their own terms (CC BY-SA 4.0)",
    ),
}  # fmt: skip

SYNTHETIC_MATRICES = ("uniform", "weak", "strong", "noisy")
NO_HUMAN_SET = ("digits", "mnist", "fmnist", "kmnist")  # bases no human-labelled CL set exists for
VARIANT_STEMS = {"MicroImageNet": "MIN", "Fashion-MNIST": "FMNIST", "Kuzushiji-MNIST": "KMNIST"}  # short pretty names

DEFAULT_VLM = "llava-hf/llava-v1.6-mistral-7b-hf"
# the sets published with their labels (reference/sources.md): the ACL (VLM) sets and CLImage's human-labelled sets
RELEASED_SETS = frozenset({
    "aclcifar10", "aclcifar10-r", "aclcifar20", "aclmin10", "aclmin10-r", "aclmin20",
    "clcifar10", "clcifar20", "clmin10", "clmin20",
})  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """A dataset built on a base: VLM labels, bias-reduced VLM labels, human labels, or synthetic labels."""

    name: str  # the CLI and Hub name: aclcifar10, aclcifar10-r, clcifar10, cifar10-uniform
    base: Base
    kind: str  # "vlm", "vlm-r", "human" or "synthetic"
    matrix: str | None = None  # synthetic variants: which transition matrix
    num_cl: int = 3  # CLs per image in the released set

    @property
    def pretty_name(self) -> str:
        stem = self.base.pretty_name
        for long, short in VARIANT_STEMS.items():
            stem = stem.replace(long, short)
        return {
            "vlm": f"ACL{stem}",
            "vlm-r": f"ACL{stem}-R",
            "human": f"CL{stem}",
            "synthetic": f"{stem}-{(self.matrix or '').capitalize()}",
        }[self.kind]

    @property
    def license(self) -> str:
        return self.base.license

    @property
    def release(self) -> str:
        """Who vouches for :attr:`labeling_summary`: the published set, or the protocol this variant's name stands for.

        Example:
            >>> get_variant("aclcifar10").release, get_variant("acldigits").release
            ('the published ACLCIFAR10 release', 'the ACL labeling protocol this variant is named after')
        """
        if self.name in RELEASED_SETS:
            return f"the published {self.pretty_name} release"
        if self.kind == "synthetic":
            return "aclbuild's definition of this variant"
        return f"the {'ACL' if self.kind != 'human' else 'CLImage'} labeling protocol this variant is named after"

    @property
    def labeling_summary(self) -> str:
        """How the variant's release made its complementary labels (a clause: the card says whose word it is)."""
        if self.kind == "vlm":
            return (
                f"each label is the answer of the vision-language model {DEFAULT_VLM} to 'which label does not "
                "belong to this image?' among 4 classes drawn uniformly at random, one query per round"
            )
        if self.kind == "vlm-r":
            return (
                f"each label is the answer of the vision-language model {DEFAULT_VLM} among 4 candidates drawn from "
                "per-class budgets so that every class is chosen about equally often (the -R bias-reduction "
                "procedure); the CLs of an image are distinct"
            )
        if self.kind == "human":
            return "each label is a human annotator's choice of a class the image does not belong to, among 4 shown"
        return (
            f"each image's CLs are drawn without replacement from row y of the '{self.matrix}' transition matrix "
            "(cll-benchmark protocol), y being the true label"
        )


def _build_variants() -> dict[str, Variant]:
    variants: dict[str, Variant] = {}
    for base in BASES.values():
        for kind, name in (("vlm", f"acl{base.name}"), ("vlm-r", f"acl{base.name}-r"), ("human", f"cl{base.name}")):
            if kind == "human" and base.name in NO_HUMAN_SET:
                continue
            variants[name] = Variant(name, base, kind)
        for matrix in SYNTHETIC_MATRICES:
            variants[f"{base.name}-{matrix}"] = Variant(f"{base.name}-{matrix}", base, "synthetic", matrix)
    return variants


VARIANTS: dict[str, Variant] = _build_variants()


def get_base(name: str) -> Base:
    """The base called ``name`` (case-insensitive), e.g. ``get_base("min10").num_classes == 10``."""
    try:
        return BASES[name.lower()]
    except KeyError:
        raise UnknownNameError(f"unknown base {name!r}; choose one of: {', '.join(BASES)}") from None


def get_variant(name: str) -> Variant:
    """The dataset variant called ``name`` (case-insensitive; ``aclcifar10r`` is accepted for ``aclcifar10-r``)."""
    key = name.lower()
    if key not in VARIANTS and key.endswith("r") and key[:-1] + "-r" in VARIANTS:
        key = key[:-1] + "-r"
    try:
        return VARIANTS[key]
    except KeyError:
        raise UnknownNameError(
            f"unknown dataset {name!r}; run `aclbuild datasets` to list them (e.g. aclcifar10, aclmin10-r, "
            "clcifar20, digits-uniform)"
        ) from None


@dataclass(frozen=True)
class CustomBase(Base):
    """A base made from any image-classification source (:mod:`aclbuild.loaders.hf_source`): ``spec`` says where
    its images are, ``description`` (JSON) what the source is: id, revision, licence, columns, names, size."""

    spec: object = None  # a SourceSpec
    description: str = "{}"
    given_short_names: tuple[str, ...] = ()  # --class-names' short names (else the ClassLabel's names as they are)

    @property
    def short_names(self) -> tuple[str, ...]:
        """The names prompts use without --long-label: given, not cut to their last word."""
        return self.given_short_names or self.long_names

