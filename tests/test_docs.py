"""The user's README and the docs site: the site builds with ``mkdocs build --strict``, README stays short and
starts with the set-up commands, and no page carries commit hashes, load averages or work-log words."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETUP_COMMANDS = (
    'pip install torch==2.13.0 && pip install -e ".[bench]" && aclbuild quickstart',
    'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q',
)
# A 7-40 hex word (with at least one digit, so that words such as "defaced" pass) next to "commit".
COMMIT_HASH = re.compile(
    r"\bcommits?\W{1,3}(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b|\b(?=[0-9a-f]*\d)[0-9a-f]{7,40}\W{1,3}commit", re.IGNORECASE
)
FORBIDDEN_WORDS = re.compile(r"load average|\bsessions?\b", re.IGNORECASE)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess:
    """Run ``mkdocs build --strict`` on ``project`` (a folder with mkdocs.yml and docs/) into ``site``."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120)


def user_pages() -> list[Path]:
    """README and every docs page."""
    return [README, *sorted(DOCS.glob("*.md"))]


def test_site_builds_strict(tmp_path):
    result = mkdocs_build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    for page in DOCS.glob("*.md"):
        built = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / built).is_file(), f"{page.name} was not built"


@pytest.mark.parametrize("bad", ["[gone](no-such-page.md)", "[gone](building.md#no-such-section)", "orphan"])
def test_site_build_fails_on_a_broken_link_or_an_orphan_page(tmp_path, bad):
    project = tmp_path / "project"
    shutil.copytree(DOCS, project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    if bad == "orphan":
        (project / "docs" / "orphan.md").write_text("# Not in nav\n", encoding="utf-8")
    else:
        with open(project / "docs" / "hub.md", "a", encoding="utf-8") as page:
            page.write(f"\n{bad}\n")
    result = mkdocs_build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "strict mode" in result.stdout + result.stderr


def test_readme_is_short_and_starts_with_the_set_up_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    head = "\n".join(text.splitlines()[:12])
    for command in SETUP_COMMANDS:
        assert command in head, f"README's first lines lack: {command}"


def test_readme_links_resolve_on_github():
    """README's relative links (docs/hub.md, docs/index.md#anchor) name files that exist."""
    text = README.read_text(encoding="utf-8")
    targets = [t for t in MARKDOWN_LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        assert (ROOT / target.split("#")[0]).is_file(), f"README links to a missing file: {target}"


@pytest.mark.parametrize("page", user_pages(), ids=lambda p: p.name)
def test_no_commit_hashes_load_averages_or_work_log_words(page):
    text = page.read_text(encoding="utf-8")
    assert not COMMIT_HASH.search(text), COMMIT_HASH.search(text)
    assert not FORBIDDEN_WORDS.search(text), FORBIDDEN_WORDS.search(text)


@pytest.mark.parametrize(
    ("text", "bad"),
    [("as of commit 6a03170 the", True), ("(3f2c1ab commit)", True), ("one commit; prints its URL", False),
     ("the last session", True), ("load average 3.5", True), ("a defaced commit", False)],
)
def test_the_checks_catch_what_they_look_for(text, bad):
    assert bool(COMMIT_HASH.search(text) or FORBIDDEN_WORDS.search(text)) is bad
