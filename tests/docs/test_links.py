"""Every relative link in README.md and docs/*.md resolves, #anchors included."""

from __future__ import annotations

import pytest

from .markdown import README, REPO_ROOT, anchors, broken_links, doc_pages, relative_links


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_pages_link_to_each_other():
    linked = {target.partition("#")[0] for target in relative_links(README.read_text())}
    for page in doc_pages()[1:]:
        assert f"docs/{page.name}" in linked, f"README.md does not link to docs/{page.name}"


def test_a_missing_file_and_a_missing_anchor_are_reported():
    page = REPO_ROOT / "docs" / "example.md"
    text = ("# Title\n## Two words\n[ok](#two-words) [ok](../README.md#quick-start) "
            "[gone](missing.md) [bad](#nowhere) [web](https://example.com/x.md)\n"
            "```\n[in code](not-a-link.md)\n```\n")
    assert broken_links(page, text) == [
        "missing.md: no such file or folder",
        "#nowhere: no heading #nowhere in example.md",
    ]


def test_anchors_follow_github_slugs():
    text = "# Kernels\n## One entry point: `kernels.compress`\n## Errors\n## Errors\n"
    assert anchors(text) == {"kernels", "one-entry-point-kernelscompress", "errors", "errors-1"}
