"""Every link in README.md and docs/*.md resolves; nothing is fetched from the network.

* relative links point at a file or folder of the repository;
* `#anchors` (on the same page or on another Markdown page) match a heading of the target,
  slugged as GitHub does, or an explicit `<a name>`/`id` anchor;
* http(s) links are only checked to be well-formed URLs.

Links inside fenced code blocks and inline code are not links and are skipped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+(?:\([^()\s]*\)[^()\s<>]*)*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        yield number, line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: text only, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # links -> their text
    text = re.sub(r"<[^>]+>", "", text)                              # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)                   # _emphasis_, not snake_case
    text = text.strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    text = path.read_text(encoding="utf-8")
    for _, line in _prose_lines(text):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if not heading:
            continue
        slug = github_slug(heading.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


def links(path: Path):
    """(line number, target) for every link of a Markdown page."""
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        definition = REFERENCE_DEF.match(line)
        if definition:
            yield number, definition.group(1)
            continue
        prose = INLINE_CODE.sub("", line)
        for match in INLINE_LINK.finditer(prose):
            yield number, match.group(1)
        for match in AUTOLINK.finditer(prose):
            yield number, match.group(1)


def problem(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, is broken; None when it resolves."""
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        if not parts.netloc or "." not in parts.netloc or " " in target:
            return "malformed URL"
        return None
    if parts.scheme == "mailto":
        return None if "@" in parts.path else "malformed mailto link"
    if parts.scheme or parts.netloc:
        return f"unexpected link scheme {parts.scheme!r}"
    if parts.path.startswith("/"):
        return "absolute path: link relative to the page instead"
    target_path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if not target_path.exists():
        return f"{target_path.relative_to(ROOT) if target_path.is_relative_to(ROOT) else target_path} does not exist"
    if not target_path.is_relative_to(ROOT):
        return "points outside the repository"
    if parts.fragment:
        if target_path.suffix.lower() != ".md" or target_path.is_dir():
            return "anchor on a file that is not Markdown"
        if unquote(parts.fragment) not in anchors(target_path):
            return f"no heading with anchor #{parts.fragment} in {target_path.relative_to(ROOT)}"
    return None


def test_github_slugs() -> None:
    assert github_slug("Ownership: tags, not a state file") == "ownership-tags-not-a-state-file"
    assert github_slug("`kmsplan plan PATHS`") == "kmsplan-plan-paths"
    assert github_slug("`kmsplan apply PATHS | PLAN`") == "kmsplan-apply-paths--plan"
    assert github_slug("Key specs and usages") == "key-specs-and-usages"
    assert github_slug("`bypass_policy_lockout_safety_check`") == "bypass_policy_lockout_safety_check"
    assert github_slug("Policy problems (`Pnnn`)") == "policy-problems-pnnn"
    assert github_slug("[Guards](reconciler.md) and **G101**") == "guards-and-g101"


def test_link_extraction_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n[d]: d.md\n<https://example.com/x>\n"
                    "# Heading\n```yaml\n# not a heading\n```\n", encoding="utf-8")
    assert [target for _, target in links(page)] == ["a.md", "d.md", "https://example.com/x"]
    assert anchors(page) == {"heading"}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_resolve(page: Path) -> None:
    broken = [f"{page.relative_to(ROOT)}:{number}: ({target}) {why}"
              for number, target in links(page) if (why := problem(page, target))]
    assert not broken, "broken links:\n" + "\n".join(broken)
