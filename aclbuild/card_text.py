"""The card's sentences about its labels, each derived from the recorded provenance and the split statistics.

Nothing here reads the variant's name except to say, explicitly, what its release claims when nothing was recorded.

Example:
    >>> from aclbuild.card_facts import label_origin
    >>> from aclbuild.registry import get_variant
    >>> prov = {"labeler": "synthetic", "matrix": "weak", "seed": 7}
    >>> annotators(label_origin(prov), prov, get_variant("cifar10-weak"))
    "No person: aclbuild's synthetic labeler drew the labels at random."
"""

from __future__ import annotations

from pathlib import PurePath

from aclbuild.card_facts import LabelOrigin
from aclbuild.registry import Variant

NOT_RECORDED = (
    "The labeling settings of this build were not recorded: its labels came without a record of how they were made."
)
_STREAMS = {
    "seeded": "drawn uniformly at random, 4 distinct classes independent of the true label, by a generator seeded "
    "by (seed, image, round)",
    "reference": "the released ACL sets' own draws (numpy's global stream), 4 distinct classes independent of the "
    "true label",
}


def code(name: str) -> str:
    """A class name as every part of the card writes it.

    Example:
        >>> code("fruit, vegetables and mushrooms")
        '`fruit, vegetables and mushrooms`'
    """
    return f"`{name}`"


def release_claim(variant: Variant) -> str:
    """What the variant's release says about its labels, attributed to it."""
    return f"According to {variant.release}, {variant.labeling_summary}."


def annotators(origin: LabelOrigin, provenance: dict, variant: Variant) -> str:
    """Who or what made the labels (the card's "Who are the annotators?")."""
    if not origin.recorded:
        return f"Not recorded with this build. {release_claim(variant)}"
    if origin.labeler in ("llava", "vlm", "clip"):
        what = "CLIP-style zero-shot model" if origin.labeler == "clip" else "vision-language model"
        model = provenance.get("model", f"a {what} whose name was not recorded")
        revision = provenance.get("revision")
        at = f" at revision `{revision}`" if revision else " (revision not recorded)"
        dtype = f", weights in {provenance['dtype']}" if provenance.get("dtype") else ""
        how = ""
        if origin.labeler == "clip":
            template = provenance.get("clip_template", "a photo of a {name}")
            how = (f" Each CL is the shown candidate whose text (\"{template}\") is least similar to the image in the "
                   "model's embedding space.")  # fmt: skip
        return f"The {what} `{model}`{at}{dtype}, run by `aclbuild generate`; no person chose a label.{how}"
    if origin.labeler == "replay":
        claim = f" {release_claim(variant)}" if variant.kind in ("vlm", "vlm-r") else ""
        return (
            f"The labels are those of the label file `{provenance.get('answers', 'not recorded')}`, replayed by "
            f"`aclbuild generate --labeler replay`; the model that wrote that file is not recorded.{claim}"
        )
    if origin.kind == "synthetic":
        return "No person: aclbuild's synthetic labeler drew the labels at random."
    if origin.kind == "human":
        return "Human annotators, as recorded in the labels' provenance."
    return f"The labeler `{origin.labeler}`, of which nothing else is recorded."


def public_settings(provenance: dict) -> dict:
    """The provenance as the card shows it: files by their name only (a local path says nothing to the card's readers
    and may say too much about the machine that made it).

    Example:
        >>> public_settings({"answers": "/home/me/acl/aclcifar10.csv", "candidates": "from /tmp/run/labels.parquet"})
        {'answers': 'aclcifar10.csv', 'candidates': 'from labels.parquet'}
    """
    shown = dict(provenance)
    if isinstance(shown.get("answers"), str):
        shown["answers"] = PurePath(shown["answers"]).name
    if isinstance(shown.get("candidates"), str) and shown["candidates"].startswith("from "):
        shown["candidates"] = "from " + PurePath(shown["candidates"][5:]).name
    if isinstance(shown.get("source"), dict):  # a custom source: one line, not its whole description
        shown["source"] = source_words(shown["source"])
    return shown


def source_words(source: dict) -> str:
    """A custom source (`generate NAME --source ...`) in words: id (a folder by its name only), revision, split.

    Example:
        >>> source_words({"id": "uoft-cs/cifar10", "hub": True, "revision": "0b2714", "split": "train",
        ...               "image_size": 32})
        "uoft-cs/cifar10 at revision 0b2714, split 'train', images 32x32"
        >>> source_words({"id": "/home/me/photos", "hub": False, "split": "train", "image_size": 64})
        "local folder photos, split 'train', images 64x64"
    """
    source_id = str(source.get("id"))
    if source.get("hub"):
        named = f"{source_id} at revision {source['revision']}" if source.get("revision") else source_id
    else:
        named = f"local folder {PurePath(source_id).name}"
    size = source.get("image_size")
    columns = f", columns {source['image_column']} and {source['label_column']}" if source.get("label_column") else ""
    own = list(source.get("source_class_names") or ())
    if own and own != list(source.get("class_names") or own):  # --class-names renamed them: keep the source's
        shown = ", ".join(own[:20]) + (f" and {len(own) - 20} more" if len(own) > 20 else "")
        columns += f" (the source's class names, renamed with --class-names: {shown})"
    return f"{named}, split '{source.get('split')}'{columns}" + (f", images {size}x{size}" if size else "")


def question(provenance: dict) -> str | None:
    """The question the model was asked, with placeholders for the 4 candidates (None: not recorded)."""
    if provenance.get("prompt"):
        from aclbuild.labeling.prompts import load_template

        try:
            text = load_template("cl", None, provenance["prompt"]).question(["c1", "c2", "c3", "c4"])
        except Exception:  # noqa: BLE001 - a prompt name this version does not know: quote the name only
            return f"the question set named `{provenance['prompt']}`"
        return f'"{text}"'
    if provenance.get("prompt_sha256"):
        return f"a custom question template (SHA-256 `{provenance['prompt_sha256'][:16]}...`)"
    return None


def annotation_process(origin: LabelOrigin, provenance: dict, variant: Variant, num_cl: int) -> list[str]:
    """The card's annotation-process bullets (one fact each), from the provenance."""
    if not origin.recorded:
        return [f"{NOT_RECORDED} {release_claim(variant)}"]
    lines = []
    rounds = provenance.get("num_rounds", provenance.get("cls_per_image"))
    if origin.kind == "synthetic":
        noise = f", noise parameter {provenance['noise']}" if "noise" in provenance else ""
        matrix = provenance.get("matrix", "not recorded")
        lines.append(
            f"Each image's CLs were drawn without replacement from row y of the '{matrix}' transition matrix{noise}, "
            "y being the image's true label, by a generator seeded by (seed, image)."
        )
    elif origin.labeler in ("llava", "replay"):
        asked = question(provenance) if origin.labeler == "llava" else None
        if origin.labeler == "llava":
            lines.append(
                f"Question: {asked or 'not recorded'}; the 4 candidates are listed in a shuffled order and the class "
                "the model names is that round's CL."
            )
        stream = str(provenance.get("candidates", "not recorded"))
        described = _STREAMS.get(stream, f"read back {stream[5:]}" if stream.startswith("from ") else stream)
        if provenance.get("bias_reduction"):
            block = provenance.get("r_block", "not recorded")
            described = (
                f"drawn from per-class budgets (bias reduction, -R, blocks of {block} images), so every class is "
                "chosen about equally often and an image's CLs are distinct"
            )
        if origin.labeler == "replay":  # the file's labels were checked against this stream, not chosen from it
            lines.append(f"The replay matched the file's labels against candidates {described}.")
        else:
            lines.append(f"Candidates: {described}.")
        if origin.labeler == "llava":
            lines.append(_answering(provenance))
    if provenance.get("source"):  # a custom source: public_settings has put it in words
        source = provenance["source"]
        words = source_words(source) if isinstance(source, dict) else source
        lines.append(f"Images: {words}; stored as RGB, an image of another size resized to it (bicubic).")
    if rounds is not None:
        kept = f"; this set keeps the first {num_cl}" if num_cl < int(rounds) else ""
        lines.append(f"Rounds: {rounds} per image, one CL each{kept}.")
    if "seed" in provenance:
        lines.append(f"Seed: {provenance['seed']}.")
    made = [f"protocol `{provenance['protocol']}`"] if provenance.get("protocol") else []
    made += [f"aclbuild {provenance['aclbuild_version']}"] if provenance.get("aclbuild_version") else []
    if made:
        lines.append("Made with " + ", ".join(made) + ".")
    return lines


def _answering(provenance: dict) -> str:
    """How the model's answers were read: scoring, names shown, retries."""
    scoring = provenance.get("scoring", "not recorded")
    if scoring == "generate" and provenance.get("max_new_tokens"):
        scoring = f"free generation of up to {provenance['max_new_tokens']} tokens"
    names = "long class names" if provenance.get("long_label") else "the last word of each class name"
    retries = provenance.get("max_retries", "not recorded")
    retried = "without limit" if retries == "unlimited" else f"up to {retries} times"
    return f"Answers: {scoring}, options shown as {names}; an answer naming no single option was asked again {retried}."


def bias_lines(stats: dict, class_names: tuple[str, ...]) -> list[str]:
    """The measured label noise and class bias of the train split.

    Example:
        >>> stats = {"noise_rate": 0.0023, "noisy_pairs": 2, "num_examples": 300, "cls_per_image": 3,
        ...          "cl_marginals": [0.167, 0.051, 0.782], "repeated_cl_rate": 0.0}
        >>> print(bias_lines(stats, ("truck", "cat", "ship"))[1])
        Class bias: `ship` is the most frequent CL (78.2% of CLs) and `cat` the least (5.1%); a labeler without bias would give each class 33.3%.
    """
    pairs = stats["num_examples"] * stats["cls_per_image"]
    shares = stats["cl_marginals"]
    top = max(range(len(shares)), key=shares.__getitem__)
    low = min(range(len(shares)), key=shares.__getitem__)
    lines = [
        f"Noise: {stats['noisy_pairs']:,} of the {pairs:,} (image, CL) pairs ({100 * stats['noise_rate']:.2f}%) name "
        "the image's true class, so those CLs are wrong.",
        f"Class bias: {code(class_names[top])} is the most frequent CL ({100 * shares[top]:.1f}% of CLs) and "
        f"{code(class_names[low])} the least ({100 * shares[low]:.1f}%); a labeler without bias would give each class "
        f"{100 / len(shares):.1f}%.",
    ]
    if stats["cls_per_image"] > 1:
        repeated = 100 * stats["repeated_cl_rate"]
        lines.append(f"Repeated CLs: {repeated:.2f}% of images carry the same CL more than once.")
    return lines


def kind_risk(origin: LabelOrigin, variant: Variant) -> str:
    """What the kind of labeler implies for users (the unrecorded case speaks of the release's claim)."""
    kind = origin.kind if origin.recorded else variant.kind
    text = {
        "vlm": "VLM labels carry the model's own visual and language biases; the figures above measure them here.",
        "vlm-r": "The -R draw evens out which classes are offered, not the model's errors within an image.",
        "human": "Human labels carry their annotators' confusions.",
        "synthetic": "Synthetic labels follow a chosen matrix, not the behaviour of any real labeler.",
        "clip": "CLIP zero-shot labels carry the model's image-text similarity biases (and its prompt template's); "
        "the figures above measure them here.",
    }.get(kind or "", "How the labeler errs was not recorded.")
    return text if origin.recorded else f"If the release's account holds: {text}"
