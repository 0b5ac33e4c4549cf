"""Reading the repository's Markdown: quick-start blocks, links and heading anchors."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def doc_pages() -> list[Path]:
    """README.md and every page of docs/."""
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def quick_start_block(name: str, text: str | None = None) -> list[str]:
    """The lines of the fenced block right after `<!-- quick-start: NAME -->` in the README."""
    text = README.read_text() if text is None else text
    marker = re.escape(f"<!-- quick-start: {name} -->")
    found = re.search(marker + r"[ \t]*\n```[a-z]*\n(.*?)^```", text, re.S | re.M)
    if found is None:
        raise LookupError(f"README.md has no fenced block after <!-- quick-start: {name} -->")
    return [line.strip() for line in found.group(1).splitlines() if line.strip()]


def ci_commands(*programs: str) -> list[list[str]]:
    """`.ci/run`'s top-level commands (not indented in a loop) that run one of `programs`."""
    return [shlex.split(line) for line in CI_RUN.read_text().splitlines()
            if line.split(" ", 1)[0] in programs]


def without_quiet(argv: list[str]) -> list[str]:
    """A pip command without its `-q` (CI's installs are quiet; the README's need not be)."""
    return [arg for arg in argv if arg != "-q"]


def prose(text: str) -> str:
    """Markdown with its fenced blocks and inline code removed (links there are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def relative_links(text: str) -> list[str]:
    """Every link target of the Markdown that has no scheme (no https:, mailto:, ...)."""
    return [target for target in _LINK.findall(prose(text))
            if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target)]


def anchors(text: str) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as '-'."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """The relative links of `page` whose file, folder or #anchor does not exist."""
    text = page.read_text() if text is None else text
    broken = []
    for target in relative_links(text):
        path_part, _, anchor = target.partition("#")
        if not path_part:  # an anchor of this page
            if anchor not in anchors(text):
                broken.append(f"{target}: no heading #{anchor} in {page.name}")
            continue
        resolved = (page.parent / path_part).resolve()
        if not resolved.is_relative_to(REPO_ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file or folder")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken
