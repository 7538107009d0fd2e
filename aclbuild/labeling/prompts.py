"""The labeling prompts: Jinja templates a user can replace with --prompt-file, wrapped in LLaVA-NeXT's format.

The default templates (``templates/cl.jinja``, ``templates/ord.jinja``) are the reference tool's questions word
for word. ``--prompt acl-min`` names the older questions that made the released ACLMIN10 and ACLMIN20
(``templates/acl-min-*.jinja``), so those sets' questions can be asked again. A template sees ``options``, the list
of class names in the order shown; without it the template is refused, since the model could not know what to
choose from.

Example:
    >>> template = load_template("cl", None)
    >>> template.prompt(["cat", "dog", "ship", "frog"]).endswith("from [cat, dog, ship, frog] [/INST]")
    True
    >>> load_template("ord", None).question(["cat", "dog"]).split("? ")[1]
    '(1) cat (2) dog Please respond with only the number of the correct answer'
    >>> load_template("cl", None, "acl-min").question(["cat", "dog"])
    'Which label does not belong to this image? Please answer with one word from [cat, dog]'
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import jinja2.meta

from aclbuild.errors import InputError

MODES = ("cl", "ord")
# named question sets: name -> what made them (the default is the reference tool's current wording)
NAMED_PROMPTS = {
    "default": "the reference tool's questions (ACLCIFAR10, ACLCIFAR20 and the -R sets)",
    "acl-min": "the older questions that made the released ACLMIN10 and ACLMIN20",
}
IMAGE_TOKEN = "<image>"
# LLaVA-NeXT (Mistral) chat format of the reference: the question follows the image inside one [INST] block.
PROMPT_FORMAT = "[INST] {image}\n{question} [/INST]"

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed question template and the SHA-256 of its text (logged, so a run names the prompt it used)."""

    mode: str
    source: str
    sha256: str

    @property
    def numbered(self) -> bool:
        """Whether the options are shown numbered "(1) a (2) b": the answer is then a number, else a name."""
        return "(1) \x01a" in self.question(["\x01a", "\x01b"])

    def question(self, options: list[str]) -> str:
        return _compiled(self.source).render(options=list(options)).strip()

    def prompt(self, options: list[str]) -> str:
        """The full model prompt, image placeholder included."""
        return PROMPT_FORMAT.format(image=IMAGE_TOKEN, question=self.question(options))

    def split_prompt(self, options: list[str]) -> tuple[str, str]:
        """``(prefix, suffix)`` of :meth:`prompt`: the prefix holds the image and no option text, so its key/value
        cache serves every round and retry of an image. The cut lies at a space (dropped), so that the suffix
        tokenises as it does inside the whole prompt for word-piece tokenisers."""
        full = self.prompt(options)
        prefix = _shared_prefix(self.mode, self.source)
        return full[: len(prefix)], full[len(prefix) + 1 :]


def unwrapped_question(prompt: str) -> str:
    """The question inside a prompt made by :meth:`PromptTemplate.prompt`, without LLaVA's ``[INST]`` wrapper: what a
    chat model (``--labeler vlm``) is asked in its own format.

    Example:
        >>> unwrapped_question(load_template("cl", None, "acl-min").prompt(["cat", "dog"]))[-10:]
        '[cat, dog]'
    """
    head, tail = PROMPT_FORMAT.format(image=IMAGE_TOKEN, question="\x00").split("\x00")
    if not (prompt.startswith(head) and prompt.endswith(tail)):
        raise ValueError(f"not a prompt made by PromptTemplate.prompt: {prompt[:60]!r}")
    return prompt[len(head) : len(prompt) - len(tail)]


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@functools.lru_cache(maxsize=8)
def _shared_prefix(mode: str, source: str) -> str:
    return shared_prefix(PromptTemplate(mode, source, ""))


def shared_prefix(template: PromptTemplate) -> str:
    """The longest prompt start, ending before a space, that no option list changes."""
    one, two = template.prompt(["\x01a", "\x01b"]), template.prompt(["\x02c", "\x02d"])
    common = 0
    while common < min(len(one), len(two)) and one[common] == two[common]:
        common += 1
    cut = one.rfind(" ", 0, common)
    if cut <= one.index(IMAGE_TOKEN):
        raise InputError("the prompt template must have some words before the options (after the image)")
    return one[:cut]


def load_template(mode: str, path: str | Path | None, name: str = "default") -> PromptTemplate:
    """The template of ``mode`` (``cl`` or ``ord``) from ``path``, or the packaged one called ``name`` (see
    :data:`NAMED_PROMPTS`) when ``path`` is None."""
    if mode not in MODES:
        raise InputError(f"unknown --mode {mode!r}; choose cl or ord")
    if name not in NAMED_PROMPTS:
        raise InputError(f"unknown --prompt {name!r}; choose one of: {', '.join(NAMED_PROMPTS)} (or --prompt-file)")
    if path is None:
        file = f"templates/{mode}.jinja" if name == "default" else f"templates/{name}-{mode}.jinja"
        source = resources.files("aclbuild.labeling").joinpath(file).read_text("utf-8")
    else:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"prompt file {path} does not exist")
        source = path.read_text(encoding="utf-8")
    try:
        variables = jinja2.meta.find_undeclared_variables(_ENV.parse(source))
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"prompt template {path or mode}: {exc.message} (line {exc.lineno})") from None
    if "options" not in variables:
        raise InputError(
            f"prompt template {path or mode} never uses {{{{ options }}}}: the model must see the classes to choose from"
        )
    unknown = variables - {"options"}
    if unknown:
        raise InputError(f"prompt template {path or mode} uses unknown variables: {', '.join(sorted(unknown))}")
    template = PromptTemplate(mode, source, hashlib.sha256(source.encode("utf-8")).hexdigest())
    template.question(["a", "b", "c", "d"])  # render once now, so a template error surfaces before any model runs
    return template
