"""What a card may say about its labels: the kind of labeler that made them, read from the recorded provenance (the
``provenance`` that `aclbuild generate` stores in its ``labels.parquet``), never from the variant's name.

A variant whose kind contradicts the recorded labeler is refused (:func:`check_label_kind`) unless the user insists;
without a record, the card attributes what it says about the labels to the variant's release, explicitly.

Example:
    >>> label_origin({"labeler": "llava", "bias_reduction": True}).kind
    'vlm-r'
    >>> label_origin({"labeler": "synthetic", "matrix": "strong"}).describe()
    "synthetic labels (the 'strong' transition matrix)"
    >>> label_origin(None).recorded
    False
"""

from __future__ import annotations

from dataclasses import dataclass

from aclbuild.errors import InputError
from aclbuild.registry import VARIANTS, Variant

INSIST_FLAG = "--allow-kind-mismatch"
# provenance labeler -> variant kind (the -R ones get "-r"); replay reads back a VLM's label file; clip's are
# model-made but no VLM's answers: a kind of their own
_LABELER_KINDS = {
    "llava": "vlm", "vlm": "vlm", "replay": "vlm", "synthetic": "synthetic", "human": "human", "clip": "clip",
}
_KIND_WORDS = {
    "vlm": "VLM labels", "vlm-r": "bias-reduced (-R) VLM labels", "human": "human labels",
    "synthetic": "synthetic labels", "clip": "CLIP zero-shot labels",
}  # fmt: skip


@dataclass(frozen=True)
class LabelOrigin:
    """The labeler kind the provenance records (``kind`` None: nothing recorded, or a labeler unknown to aclbuild)."""

    kind: str | None
    labeler: str | None = None
    matrix: str | None = None

    @property
    def recorded(self) -> bool:
        return self.labeler is not None

    def describe(self) -> str:
        """The labels in words, for messages and the card.

        Example:
            >>> LabelOrigin("vlm", "replay").describe()
            'VLM labels (replayed from a label file)'
        """
        if not self.recorded:
            return "labels of unrecorded origin"
        if self.kind is None:
            return f"labels of the unknown labeler {self.labeler!r}"
        words = _KIND_WORDS[self.kind]
        if self.kind == "synthetic" and self.matrix:
            return f"{words} (the '{self.matrix}' transition matrix)"
        return f"{words} (replayed from a label file)" if self.labeler == "replay" else words

    def matches(self, variant: Variant) -> bool:
        """Whether ``variant`` names labels of this kind (unrecorded labels match any variant)."""
        if not self.recorded:
            return True
        if self.kind != variant.kind:
            return False
        return self.kind != "synthetic" or self.matrix is None or self.matrix == variant.matrix


def label_origin(provenance: dict | None) -> LabelOrigin:
    """The labeler kind of a provenance dict (empty or None: not recorded).

    Raises on labels that are no complementary labels (`generate --mode ord` answers).

    Example:
        >>> label_origin({"labeler": "replay", "bias_reduction": False}).kind
        'vlm'
    """
    if not provenance or not provenance.get("labeler"):
        return LabelOrigin(None)
    if provenance.get("mode", "cl") != "cl":
        raise InputError(
            f"the labels' provenance records --mode {provenance['mode']}: ordinary-label answers, not complementary "
            "labels; build from a --mode cl run"
        )
    labeler = str(provenance["labeler"])
    kind = _LABELER_KINDS.get(labeler)
    if kind == "vlm" and provenance.get("bias_reduction"):
        kind = "vlm-r"
    return LabelOrigin(kind, labeler, provenance.get("matrix") if kind == "synthetic" else None)


def variant_for(origin: LabelOrigin, variant: Variant) -> Variant | None:
    """The variant on ``variant``'s base that names labels of ``origin``'s kind, if there is one.

    Example:
        >>> from aclbuild.registry import get_variant
        >>> variant_for(LabelOrigin("synthetic", "synthetic", "weak"), get_variant("aclcifar10")).name
        'cifar10-weak'
    """
    if origin.kind == "synthetic" and origin.matrix is None:
        return None  # any matrix would match: naming one would be a guess
    same_base = (c for c in VARIANTS.values() if c.base == variant.base)
    return next((c for c in same_base if origin.recorded and origin.kind and origin.matches(c)), None)


def check_label_kind(variant: Variant, provenance: dict | None, allow_mismatch: bool = False) -> LabelOrigin:
    """The labels' origin; raises when it contradicts ``variant``'s kind, unless ``allow_mismatch``.

    Example:
        >>> from aclbuild.registry import get_variant
        >>> check_label_kind(get_variant("aclcifar10"), {"labeler": "synthetic", "matrix": "strong"})
        Traceback (most recent call last):
        aclbuild.errors.InputError: dataset aclcifar10 names VLM labels, but the labels' recorded provenance says synthetic labels (the 'strong' transition matrix); build them as --dataset cifar10-strong, or pass --allow-kind-mismatch to keep aclcifar10 (the card then says what the labels are)
    """
    origin = label_origin(provenance)
    if allow_mismatch or origin.matches(variant):
        return origin
    right = variant_for(origin, variant)
    named = _KIND_WORDS[variant.kind] + (f" (the '{variant.matrix}' matrix)" if variant.kind == "synthetic" else "")
    fix = f"build them as --dataset {right.name}, or pass" if right else "pass"
    raise InputError(
        f"dataset {variant.name} names {named}, but the labels' recorded provenance says {origin.describe()}; "
        f"{fix} {INSIST_FLAG} to keep {variant.name} (the card then says what the labels are)"
    )
