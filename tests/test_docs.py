"""The documentation stays usable: a short README that opens with the two commands, relative
links that resolve, `docs/paper.md §N` citations that name a real section, and no pointer to the
private reference folder the paper summary was written from. Pure file reading: no model loads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 8192  # bytes: the README is an on-ramp; the manual lives in docs/
# Built from two parts so that this file does not itself contain the string it forbids.
PRIVATE_REFERENCE = "shared" + "/reference"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CITATION = re.compile(r"paper\.md\s+§(\d+(?:\.\d+)*)")
SECTION_REF = re.compile(r"§(\d+(?:\.\d+)*)(?:\s+#(\d+))?")
NUMBERED_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?(?=\s|$)", re.M)


def first_code_block(markdown: str) -> tuple[str, str]:
    """(text before the first fenced block, the block's content)."""
    match = FENCE.search(markdown)
    assert match, "no fenced code block"
    return markdown[:match.start()], match.group(0)


def broken_links(path: Path) -> list[str]:
    """Relative links in a markdown file whose target file does not exist (anchors stripped;
    web and mail links skipped; links inside code are not links)."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"(?i)(https?:|mailto:|#)", target):
            continue
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / file_part).is_file():
            broken.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: ({target})")
    return broken


def paper_sections(paper: Path) -> dict[str, str]:
    """Section number -> its text, up to the next numbered heading."""
    text = paper.read_text(encoding="utf-8")
    heads = list(NUMBERED_HEADING.finditer(text))
    return {h.group(1): text[h.end():(heads[i + 1].start() if i + 1 < len(heads) else len(text))]
            for i, h in enumerate(heads)}


def cited_sections(text: str) -> list[tuple[str, str | None]]:
    """(section, item or None) for every `paper.md §N` citation, including the further
    `, §M #k` of the same parenthesis: `(paper.md §1.2 #1, §1.5 #3)` cites 1.2 #1 and 1.5 #3."""
    cited = []
    for match in CITATION.finditer(text):
        clause = re.split(r"[)\n;]", text[match.start():], maxsplit=1)[0]
        cited += [(m.group(1), m.group(2)) for m in SECTION_REF.finditer(clause)]
    return cited


def missing_sections(cited, sections: dict[str, str]) -> list[str]:
    missing = []
    for number, item in cited:
        if number not in sections:
            missing.append(f"§{number}")
        elif item and not re.search(rf"^\s*(\|\s*{item}\s*\||{item}\.\s)", sections[number], re.M):
            missing.append(f"§{number} #{item}")
    return missing


def repo_files() -> list[Path]:
    """Tracked files, plus new files not yet committed that git does not ignore, so that a
    document is checked before it is first committed."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def is_generated(path: Path) -> bool:
    """Leaderboard pages and run records are written by `publish`, not by hand."""
    relative = path.relative_to(ROOT).parts
    return relative[0] == "leaderboards" and relative != ("leaderboards", "README.md")


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "leaderboards" / "README.md",
            *sorted((ROOT / "docs").glob("*.md"))]


# ---- the README ---------------------------------------------------------------------------------

def test_readme_is_short_and_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme) <= README_LIMIT, f"README.md is {len(readme)} bytes; move detail into docs/"
    before, block = first_code_block(readme.decode("utf-8"))
    assert [line for line in before.splitlines() if line.strip()] == ["# unlearnbench"]
    assert "make demo" in block and "make test" in block


def test_the_readme_checks_can_fail():
    with pytest.raises(AssertionError):
        first_code_block("# title\n\nno code here\n")
    before, block = first_code_block("# t\n\nprose first\n\n```bash\nmake demo\n```\n")
    assert "prose first" in before and "make test" not in block


# ---- links --------------------------------------------------------------------------------------

def test_relative_links_resolve():
    broken = [b for doc in documents() for b in broken_links(doc)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("x")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md#part) [web](https://example.org/x) [gone](missing.md#a)\n"
                   "`[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n![img](gone.png)\n")
    assert [b.split(": ", 1)[1] for b in broken_links(doc)] == ["(missing.md#a)", "(gone.png)"]


# ---- docs/paper.md citations --------------------------------------------------------------------

def test_paper_citations_name_existing_sections():
    sections = paper_sections(ROOT / "docs" / "paper.md")
    problems = []
    for path in repo_files():
        if path.suffix not in (".py", ".md") or is_generated(path):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        cited = cited_sections(text)
        if path == ROOT / "docs" / "paper.md":  # its own cross-references: "see §1.5 #9"
            cited = [(m.group(1), m.group(2)) for m in SECTION_REF.finditer(text)]
        problems += [f"{path.relative_to(ROOT)}: {m}" for m in missing_sections(cited, sections)]
    assert not problems, "citations of sections docs/paper.md does not have:\n" + "\n".join(problems)


def test_the_citation_check_finds_a_missing_section(tmp_path):
    paper = tmp_path / "paper.md"
    paper.write_text("# Title\n## 1. Method\n### 1.2 Code\n| # | x |\n|---|---|\n| 1 | a |\n## 4. Results\n")
    sections = paper_sections(paper)
    assert sorted(sections) == ["1", "1.2", "4"]
    # PAPER stands for the file name, so that this file's own text cites nothing.
    sample = "# (PAPER §1.2 #1, §1.5; see x) and PAPER §4.1 (Table 3), §9\n(docs/PAPER §1.2 #7)"
    cited = cited_sections(sample.replace("PAPER", "paper" + ".md"))
    assert cited == [("1.2", "1"), ("1.5", None), ("4.1", None), ("1.2", "7")]
    assert missing_sections(cited, sections) == ["§1.5", "§4.1", "§1.2 #7"]


# ---- the private reference folder ---------------------------------------------------------------

def files_mentioning(paths, needle: str) -> list[Path]:
    return [p for p in paths if needle.encode() in p.read_bytes()]


def test_no_file_points_to_the_private_reference():
    hits = [str(p.relative_to(ROOT)) for p in files_mentioning(repo_files(), PRIVATE_REFERENCE)]
    assert not hits, f"these files mention {PRIVATE_REFERENCE}; cite docs/paper.md instead: {hits}"


def test_the_reference_check_finds_a_mention(tmp_path):
    clean, leaking = tmp_path / "clean.py", tmp_path / "leaking.md"
    clean.write_text("see docs/paper.md\n")
    leaking.write_text(f"from ../{PRIVATE_REFERENCE}/paper.md\n")
    assert files_mentioning([clean, leaking], PRIVATE_REFERENCE) == [leaking]


# A path into the repository, written in a comment, docstring or doc: `docs/x.md`, `bench/y.py`, ...
REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|bench|methods|metrics|tests|benchmarks|scripts|leaderboards)"
                       r"/[\w./-]*\w\.(?:md|py|json|jsonl|sh|png|txt|yaml))\b")


def missing_paths(files: list[Path]) -> list[str]:
    """Repository paths named in the given files that do not exist (paths under a run folder
    or a temporary folder are examples, not pointers, and are skipped)."""
    missing = []
    for path in files:
        for target in REPO_PATH.findall(path.read_text(encoding="utf-8", errors="replace")):
            if "<" in target or "*" in target or not (ROOT / target).exists():
                if not any(part in target for part in ("runs/", "TASK", "my_", "steer.py")):
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                    missing.append(f"{shown}: {target}")
    return missing


def test_no_reference_points_to_a_missing_file():
    this_file = Path(__file__).resolve()  # its examples name missing files on purpose
    files = [p for p in repo_files() if p.suffix in (".py", ".md", ".toml") and not is_generated(p) and p != this_file]
    assert len(files) > 50
    assert missing_paths(files) == []


def test_the_path_check_finds_a_missing_file(tmp_path):
    assert missing_paths([ROOT / "docs" / "cli.md"]) == []
    bad = tmp_path / "bad.md"
    bad.write_text("See docs/no-such-page.md and bench/runner.py.")
    assert missing_paths([bad]) == ["bad.md: docs/no-such-page.md"]


SECTION_CITATION = re.compile(r"(?<![\w/.-])([\w-]+\.md)\s+§")


def test_every_cited_markdown_file_exists():
    """`name.md §N` citations (with or without a folder) name a file the repository has."""
    files = [p for p in repo_files() if p.suffix in (".py", ".md", ".toml", ".txt") and p != Path(__file__).resolve()]
    names = {p.name for p in repo_files()}
    cited = {(p.relative_to(ROOT).as_posix(), name) for p in files
             for name in SECTION_CITATION.findall(p.read_text(encoding="utf-8", errors="replace"))}
    assert [c for c in cited if c[1] not in names] == []
    assert SECTION_CITATION.findall("see missing-notes.md §1 and docs/paper.md §2") == ["missing-notes.md"]
