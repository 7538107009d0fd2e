"""The settings of `aclbuild generate`: every option that decides the labels, the two protocols, and the checks.

``--protocol reference`` sets every behaviour of the reference tool at once (parity.md): the released candidate
stream, the released set's question, fp16, batches of 16, -R blocks of 16, long class names, free generation and
retries without limit. ``--protocol aclbuild`` (the default) keeps aclbuild's defaults. An option given explicitly
always wins over its protocol's value.

Example:
    >>> resolve_protocol("reference", "min10", bias_reduction=False)["prompt"]
    'acl-min'
    >>> resolve_protocol("reference", "cifar10", bias_reduction=True, r_block=32)["r_block"]
    32
"""

from __future__ import annotations

from dataclasses import dataclass

from aclbuild.errors import InputError
from aclbuild.labeling import budgets
from aclbuild.labeling.candidates import NUM_CANDIDATES
from aclbuild.labeling.clip import CLIP_TEMPLATE, check_template
from aclbuild.labeling.prompts import NAMED_PROMPTS
from aclbuild.labeling.reference_stream import REFERENCE_BLOCK, check_reference_stream
from aclbuild.registry import DEFAULT_VLM, SYNTHETIC_MATRICES, Base

LABELERS = ("llava", "vlm", "clip", "synthetic", "replay")
CANDIDATE_STREAMS = ("seeded", "reference")
PROTOCOLS = ("aclbuild", "reference")
UNLIMITED = None  # max_retries: ask again until the answer parses, as the reference does

# what each protocol sets when the option is not given
_DEFAULTS = {
    "aclbuild": {"candidates": "seeded", "r_block": budgets.BLOCK, "prompt": "default", "dtype": None,
                 "max_retries": 10, "batch_size": 8, "long_label": False, "scoring": "generate"},
    "reference": {"candidates": "reference", "r_block": REFERENCE_BLOCK, "prompt": "default", "dtype": "fp16",
                  "max_retries": UNLIMITED, "batch_size": 16, "long_label": True, "scoring": "generate"},
}  # fmt: skip
# the released sets made by the tool's older question (parity.md): ACLMIN10 and ACLMIN20
_OLDER_QUESTION_BASES = ("min10", "min20")


def resolve_protocol(protocol: str, base: str, bias_reduction: bool, **given) -> dict:
    """The protocol's value of every option in ``_DEFAULTS``, overridden by those ``given`` that are not None."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown --protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    values = dict(_DEFAULTS[protocol])
    if protocol == "reference" and base in _OLDER_QUESTION_BASES and not bias_reduction:
        values["prompt"] = "acl-min"
    unknown = set(given) - set(values)
    if unknown:
        raise TypeError(f"not protocol options: {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in given.items() if v is not None})
    return values


def parse_max_retries(text: str | int | None) -> int | None:
    """``--max-retries``: a count, or ``unlimited`` (None)."""
    if text is None or text == "unlimited":
        return UNLIMITED
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(f"--max-retries must be a count >= 0 or 'unlimited', got {text!r}")
    return value


@dataclass(frozen=True)
class GenerateSettings:
    """Every option that decides the labels (stored in run.json; --resume must match it)."""

    base: str
    labeler: str = "llava"
    model: str = DEFAULT_VLM
    mode: str = "cl"
    num_rounds: int = 3
    bias_reduction: bool = False
    long_label: bool = False
    seed: int = 1126
    matrix: str = "uniform"
    noise: float = 0.1
    prompt: str = "default"
    prompt_file: str | None = None
    max_new_tokens: int = 30
    max_retries: int | None = 10
    dtype: str | None = None
    scoring: str = "generate"
    limit: int | None = None
    candidates: str = "seeded"
    candidates_from: str | None = None
    answers: str | None = None
    r_block: int = budgets.BLOCK
    protocol: str = "aclbuild"
    # a custom source (generate NAME --source ORG/NAME_OR_FOLDER); None: the built-in base's own, or the defaults
    split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    class_names: str | None = None
    clip_template: str = CLIP_TEMPLATE

    @property
    def uses_model(self) -> bool:
        return self.labeler in ("llava", "vlm", "clip")


def check_settings(s: GenerateSettings, base: Base) -> None:
    """Refuse contradictory or out-of-range options before anything is loaded."""
    if s.labeler not in LABELERS:
        raise InputError(f"unknown --labeler {s.labeler!r}; choose one of: {', '.join(LABELERS)}")
    if s.mode not in ("cl", "ord"):
        raise InputError(f"unknown --mode {s.mode!r}; choose cl or ord")
    if s.num_rounds < 1:
        raise InputError(f"--num-rounds must be at least 1, got {s.num_rounds}")
    if s.labeler != "synthetic" and s.mode == "cl" and base.num_classes < NUM_CANDIDATES:
        raise InputError(f"base {base.name} has {base.num_classes} classes; a query shows {NUM_CANDIDATES} "
                         f"candidates, so it needs at least {NUM_CANDIDATES} (or use --labeler synthetic)")  # fmt: skip
    if s.max_retries is not None and s.max_retries < 0:
        raise InputError(f"--max-retries must be a count >= 0 or 'unlimited', got {s.max_retries}")
    if s.limit is not None and s.limit < 1:
        raise InputError(f"--limit must be at least 1 (the images to label), got {s.limit}")
    if not s.uses_model and s.prompt_file is not None:
        raise InputError(f"--prompt-file is a VLM's question; --labeler {s.labeler} asks none (drop the option)")
    if s.prompt not in NAMED_PROMPTS:
        raise InputError(f"unknown --prompt {s.prompt!r}; choose one of: {', '.join(NAMED_PROMPTS)}")
    if s.candidates not in CANDIDATE_STREAMS:
        raise InputError(f"unknown --candidates {s.candidates!r}; choose one of: {', '.join(CANDIDATE_STREAMS)}")
    if s.r_block < 1:
        raise InputError(f"--r-block must be at least 1, got {s.r_block}")
    if s.bias_reduction:
        if s.mode != "cl":
            raise InputError("--bias-reduction applies to complementary labels (--mode cl)")
        budgets.check_rounds(s.num_rounds, base.num_classes)
    if s.labeler == "clip" or s.clip_template != CLIP_TEMPLATE:
        _check_clip(s)
    if (s.labeler == "replay") != (s.answers is not None):
        raise InputError("--labeler replay needs --answers FILE, and --answers goes with --labeler replay only")
    if s.candidates_from is not None:
        if s.mode != "cl" or s.bias_reduction or s.labeler == "synthetic":
            raise InputError(
                "--candidates-from replays a complementary-mode run's candidate sets: no --mode ord, no -R (the "
                "file's sets already carry its -R draws), no --labeler synthetic"
            )
    elif s.candidates == "reference" and s.labeler != "synthetic":
        check_reference_stream(base.name, s.mode, s.bias_reduction)
    if s.labeler == "synthetic":
        if s.matrix not in SYNTHETIC_MATRICES:
            raise InputError(f"unknown --matrix {s.matrix!r}; choose one of: {', '.join(SYNTHETIC_MATRICES)}")
        if s.mode != "cl" or s.bias_reduction:
            raise InputError("--labeler synthetic gives complementary labels only (no --mode ord, no -R)")
        if s.matrix != "noisy" and s.noise != GenerateSettings.noise:
            raise InputError(f"--noise applies to --matrix noisy only (got --matrix {s.matrix}); drop --noise or "
                             "pass --matrix noisy")  # fmt: skip
        if s.num_rounds > base.num_classes - 1:
            raise InputError(f"--labeler synthetic draws distinct CLs: --num-rounds must be <= {base.num_classes - 1}")


def _check_clip(s: GenerateSettings) -> None:
    """--labeler clip: a model of its own, its text template, and no VLM question."""
    if s.labeler != "clip":
        raise InputError("--clip-template goes with --labeler clip only")
    if s.model == DEFAULT_VLM:
        raise InputError(
            "--labeler clip needs --model ID_OR_DIR: a model with an image and a text tower (CLIP, SigLIP, e.g. "
            f"openai/clip-vit-large-patch14); the default {DEFAULT_VLM} is a chat VLM"
        )
    if s.prompt_file is not None:
        raise InputError("--prompt-file is a VLM's question; --labeler clip scores --clip-template's text instead")
    check_template(s.clip_template)
