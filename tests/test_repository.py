"""The repository keeps its own promises about itself: nothing under ``ablate/``, and no
experiment file, cites a file that is not in the repository (issue 16.4: four docstrings
cited a DESIGN.md that only the maintainers' shared folder has; a docs audit found three
experiment files doing the same, and one citing ../shared/REFERENCE.md)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A path-like citation: a repository folder followed by a file name, or a top-level
# Markdown file in capitals (README.md, DESIGN.md).
CITED = re.compile(r"\b((?:docs|tests|benchmarks|experiments|examples|results)/[\w./-]+\.\w+"
                   r"|[A-Z][A-Z_]+\.md)\b")
GENERATED = {"REPORT.md", "SUMMARY.md"}  # written into results directories, not files of the repo


def test_nothing_under_ablate_or_experiments_cites_a_missing_file():
    missing = []
    for py in sorted([*(REPO / "ablate").rglob("*.py"), *(REPO / "experiments").glob("*.toml")]):
        for n, line in enumerate(py.read_text().splitlines(), 1):
            if "../shared/" in line:  # the maintainers' folder beside the repository
                missing.append(f"{py.relative_to(REPO)}:{n}: ../shared/")
            for cited in CITED.findall(line):
                if cited in GENERATED or "<" in cited or "*" in cited:
                    continue
                if not (REPO / cited).exists():
                    missing.append(f"{py.relative_to(REPO)}:{n}: {cited}")
    assert not missing, "cited files that are not in the repository:\n" + "\n".join(missing)


def test_the_check_finds_a_missing_file():
    assert CITED.findall("see DESIGN.md §1 and docs/nope.md") == ["DESIGN.md", "docs/nope.md"]
