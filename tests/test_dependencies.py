"""The install: every module aclbuild imports is declared, the core verbs run without the extras, and a verb that
needs an extra says which one in one line.

A core install is simulated in a subprocess by setting ``sys.modules[name] = None`` for torch, transformers and
accelerate: ``import torch`` then raises ModuleNotFoundError, and ``importlib.util.find_spec`` (which datasets uses
to look for torch) answers None, as in an environment without them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aclbuild.extras import EXTRAS, OPTIONAL_MODULES
from tests.conftest import make_legacy_dict, quiet_env, write_pickle

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aclbuild"
HEAVY = ("torch", "transformers", "accelerate")
# which extras (besides the core) a module's imports may come from; the first matching prefix wins
EXTRA_OF_MODULE = (
    ("aclbuild/labeling/", ("label", "bench")),  # generate: the synthetic and replay labelers run with bench too
    ("aclbuild/bench/", ("bench",)),
    ("aclbuild/cl_data.py", ("bench",)),
    ("aclbuild/quickstart.py", ("bench",)),
    ("aclbuild/extras.py", ("label", "bench")),  # it imports the optional modules on purpose
    ("tests/", ("test",)),
)
BLOCK_HEAVY = "import sys\nfor _name in {heavy!r}:\n    sys.modules[_name] = None\n"


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement: ``"Jinja2>=3.1"`` -> ``jinja2``."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def declared() -> dict[str, set[str]]:
    """``core`` and each extra of pyproject.toml -> the distribution names it declares (extras of itself expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"core": {requirement_name(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        groups[extra] = set()
        for requirement in requirements:
            own = re.fullmatch(r"aclbuild\[([\w,\s]+)\]", requirement.strip())
            groups[extra] |= (
                set().union(*(groups[e] for e in own.group(1).replace(" ", "").split(",")))
                if own
                else {requirement_name(requirement)}
            )
    return groups


def imported_roots(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, at module level or inside functions."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def undeclared_imports(files: dict[str, str], groups: dict[str, set[str]], own: set[str]) -> list[str]:
    """One line per import of ``files`` (relative path -> source) that no allowed group declares."""
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for path, source in sorted(files.items()):
        extras = next((e for prefix, e in EXTRA_OF_MODULE if path.startswith(prefix)), ())
        allowed = set(groups["core"]).union(*(groups[e] for e in extras))
        for root in sorted(imported_roots(source) - own - set(sys.stdlib_module_names)):
            names = {requirement_name(d) for d in distributions.get(root, [])}
            if not names & allowed:
                where = ", ".join(["core", *extras])
                problems.append(f"{path}: imports {root} ({', '.join(sorted(names)) or 'not installed'}), "
                                f"not declared in {where}")  # fmt: skip
    return problems


def package_sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_every_import_of_the_package_is_declared_where_its_module_is_installed():
    assert undeclared_imports(package_sources(), declared(), {"aclbuild"}) == []


def test_every_import_of_the_tests_is_declared_by_the_test_extra():
    tests = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py")}
    own = {"aclbuild", "tests"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
    assert undeclared_imports(tests, declared(), own) == []


def test_an_undeclared_import_is_found_at_module_level_and_inside_a_function():
    groups = declared()
    core_without_httpx2 = {**groups, "core": groups["core"] - {"httpx2"}}
    files = {
        "aclbuild/hub_errors.py": "def answer_lost(exc):\n    import httpx2\n    return httpx2\n",
        "aclbuild/stats.py": "import torch\n",  # an extra's module in a core verb
        "aclbuild/bench/plots.py": "import torch\nfrom matplotlib.figure import Figure\n",  # declared: fine
    }
    problems = undeclared_imports(files, core_without_httpx2, {"aclbuild"})
    assert [p.split(":")[0] for p in problems] == ["aclbuild/hub_errors.py", "aclbuild/stats.py"]
    assert "imports httpx2 (httpx2)" in problems[0] and "not declared in core" in problems[0]


def test_the_core_leaves_out_the_heavy_modules_and_the_extras_bring_them():
    groups = declared()
    assert not groups["core"] & set(HEAVY)
    assert set(EXTRAS) | {"test"} == set(groups) - {"core"}
    assert {"torch", "transformers", "accelerate"} <= groups["label"]
    assert {"torch", "accelerate"} <= groups["bench"]
    assert groups["label"] | groups["bench"] | {"pytest", "tokenizers", "mkdocs"} <= groups["test"]
    assert set(OPTIONAL_MODULES) == set(HEAVY)


def test_transformers_is_bounded_below_the_release_that_drops_past_key_values():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    bounds = {r for extra in ("label", "bench") for r in project["optional-dependencies"][extra] if "transformers" in r}
    assert bounds and all("<5.40" in r for r in bounds), bounds


def run_python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=quiet_env(),
                          cwd=cwd or ROOT, timeout=300)  # fmt: skip


def test_the_core_verbs_and_reports_modules_import_no_heavy_module():
    code = (
        "import sys, aclbuild, aclbuild.cli, aclbuild.builder, aclbuild.validate, aclbuild.stats, aclbuild.pickle_export, "
        "aclbuild.hub, aclbuild.verification, aclbuild.api, aclbuild.bench.report, aclbuild.bench.results\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


CLI = BLOCK_HEAVY.format(heavy=HEAVY) + "from aclbuild.cli import main\nsys.argv = ['aclbuild', *sys.argv[1:]]\nmain()"


def test_build_validate_stats_export_run_without_the_extras(tmp_path):
    source = write_pickle(tmp_path / "tiny.pkl", make_legacy_dict(n=20))
    repo, pickles = tmp_path / "repo", tmp_path / "pickles"
    for args in (
        ("build", source, "--dataset", "aclcifar10", "-o", repo),
        ("validate", repo),
        ("stats", repo),
        ("export", repo, "-o", pickles),
    ):
        done = run_python(CLI, *map(str, args), cwd=tmp_path)
        assert done.returncode == 0, f"{args[0]}: {done.stderr}"
    assert (pickles / "aclcifar10.pkl").is_file()


@pytest.mark.parametrize(
    "args, extra",
    [
        (("benchmark", "repo", "-s", "FWD", "-o", "bench"), "bench"),
        (("quickstart", "-o", "quick"), "bench"),
        (("generate", "digits", "--labeler", "synthetic", "--limit", "5", "-o", "labels"), "label"),
    ],
)
def test_a_verb_that_needs_an_extra_names_it_in_one_line(tmp_path, args, extra):
    done = run_python(CLI, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f'error: torch is not installed; {EXTRAS[extra]} need the {extra} extra: pip install "aclbuild[{extra}]"'
    ]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_vlm_labeler_without_transformers_names_the_label_extra(tmp_path):
    code = "import sys\nsys.modules['transformers'] = None\n" + (
        "from aclbuild.errors import AclbuildError\nfrom aclbuild.labeling.llava import LlavaBackend\n"
        "try:\n    LlavaBackend.from_pretrained('some/model')\nexcept AclbuildError as exc:\n"
        "    print(type(exc).__name__, isinstance(exc, ImportError), exc)\n"
    )
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        'MissingExtraError True transformers is not installed; generate and its VLM labeler need the label extra: '
        'pip install "aclbuild[label]"'
    )


def test_load_cl_dataset_without_torch_names_the_bench_extra(tmp_path):
    code = BLOCK_HEAVY.format(heavy=HEAVY) + (
        "import aclbuild\ntry:\n    aclbuild.load_cl_dataset('repo', 'train')\nexcept ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = f'torch is not installed; {EXTRAS["bench"]} need the bench extra: pip install "aclbuild[bench]"'
    assert done.stdout.strip() == f"MissingExtraError {expected}"


def test_likelihood_scoring_passes_the_cache_without_a_deprecation_warning(tmp_path, monkeypatch, one_thread):
    """transformers deprecates ``past_key_values`` (removed in 5.40): the reused prefix cache goes in as ``cache``."""
    import warnings

    import numpy as np
    import transformers
    from transformers.utils import generic

    from aclbuild.labeling.backend import Query, ask
    from aclbuild.labeling.llava import LlavaBackend
    from aclbuild.labeling.prompts import load_template
    from tests.tiny_llava import PrefixPasses, build_tiny_llava

    logged = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda *args, **kwargs: logged.append(args))
    template, names = load_template("cl", None), ["airplane", "bird", "cat", "dog"]
    prefix, suffix = template.split_prompt(names)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pairs = [(i, r) for i in (0, 1) for r in (0, 1)]
    queries = [Query(i, r, 0, image, names, names, template.prompt(names), prefix, suffix) for i, r in pairs]
    model = build_tiny_llava(tmp_path / "model")
    backend = LlavaBackend.from_pretrained(str(model), scoring="likelihood", batch_size=2)
    prefix_passes = PrefixPasses(backend.model)
    backend.keep_prefixes = 2  # -R: the kept cache is copied and reused by the second call
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        first = [r.choice for r in ask(backend, queries[::2])]
        second = [r.choice for r in ask(backend, queries[1::2])]
    assert logged == []
    assert prefix_passes.count == 2 and len(first) == len(second) == 2
    new_name = tuple(int(part) for part in transformers.__version__.split(".")[:2]) >= (5, 24)
    assert backend.cache_keyword == ("cache" if new_name else "past_key_values")
