#!/usr/bin/env python3
"""Checks that every relative link in README.md and docs/*.md resolves: the
file exists and, for a `#fragment` into a Markdown file, one of its headings
has that anchor (GitHub's rule: lowercase, punctuation dropped, spaces to
hyphens). Exits 1 and names each broken link."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def anchors(path):
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def links(path):
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            for target in LINK.findall(line):
                yield number, target


def main():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for number, target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file, _, fragment = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{where}: no heading with anchor #{fragment}")
    for line in broken:
        print(line, file=sys.stderr)
    checked = len(pages)
    if broken:
        print(f"{len(broken)} broken links in {checked} pages", file=sys.stderr)
        return 1
    print(f"links: every relative link in {checked} pages resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
