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


def test_make_install_pins_every_library_that_shapes_the_results():
    """constraints.txt pins each dependency pyproject.toml names (torch and torchvision are
    pinned there), and every `pip install` in the Makefile applies it: a fresh clone's
    reports then come out byte for byte as committed, whatever has been released since."""
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[\w.]+", version), f"not an exact pin: {line!r}"
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"],
              *project["optional-dependencies"]["inception"]]
    for req in map(Requirement, wanted):
        name = req.name.lower().replace("_", "-")
        if name in ("torch", "torchvision"):
            assert str(req.specifier).startswith("=="), req
            continue
        assert name in pins, f"{req.name} is not pinned in constraints.txt (`make constraints`)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {req}"
    makefile = (REPO / "Makefile").read_text()
    installs = [ln for ln in makefile.splitlines() if "pip install" in ln and "--upgrade pip" not in ln]
    assert installs and all("$(PIP_C)" in ln for ln in installs), installs
    assert "CONSTRAINTS ?= constraints.txt" in makefile
