"""Every .tex a report and `ablate compare` write compiles with a real pdflatex, as a user
pastes it (issue #20 item 5).

On synthetic results directories written by the real writers (tests/report_synthetic.py:
leave-one-out and add-one-in; tests/report_levels_synthetic.py: an experiment with
``[axes]``), each ``tables/*.tex`` and ``summary/tables/*.tex`` is ``\\input`` into a minimal
document (article, booktabs, amssymb): the wide float tables on a landscape page in
``\\tiny``; the compact tables (``effects_compact.tex``, ``compact_<metric>.tex``) as bare
tabulars in ``\\small`` inside a ``table`` float, the report's on a PORTRAIT page with
article's default text width (345pt) and the summary's on a landscape one (2cm margins). pdflatex must exit 0; for a compact table the PDF page must be
portrait (resp. landscape), the log must have no "Overfull \\hbox" wider than 1pt, and the
table's measured width must be within the text width. Skipped only where pdflatex is not
installed (`make install` installs texlive-latex-recommended where apt-get is available).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_levels_synthetic import make_axes_results  # noqa: E402
from report_synthetic import make_results  # noqa: E402

from ablate.report import write_report  # noqa: E402
from ablate.report.compare import write_summary  # noqa: E402

PDFLATEX = shutil.which("pdflatex")
# Only the tests that compile need pdflatex; the numbers' test runs everywhere.
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed (Debian: apt-get install "
                                    "texlive-latex-recommended; `make install` tries it)")
SLACK_PT = 1.0  # an overfull box up to this is invisible
COMPACT = re.compile(r"^(effects_compact|compact_.*)\.tex$")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Three reports (leave-one-out, add-one-in, with axes) and their summary."""
    root = tmp_path_factory.mktemp("latex")
    dirs = [make_results(root / "loo", artefacts=False, pending=False),  # finished: a summary takes them
            make_results(root / "aoi", design="add-one-in", artefacts=False, pending=False),
            make_axes_results(root / "axes")[0]]
    for d in dirs:
        write_report(d)
    write_summary(dirs, root)
    # the summary again with the axes experiment limited to two levels (one column each)
    two = make_axes_results(root / "axes2", axes={"lr_scale": [0.5, 2]})[0]
    write_report(two)
    write_summary(dirs[:2] + [two], root / "two")
    return root


def _compile(tex: Path, work: Path, *, landscape: bool, compact: bool) -> tuple[str, bytes]:
    """Compile ``tex`` inside a minimal document; return the log and the PDF."""
    work.mkdir(parents=True, exist_ok=True)
    body = (["\\begin{table}[htbp]\\centering\\small", "\\sbox0{\\input{table.tex}}",
             "\\typeout{TABLEWIDTH=\\the\\wd0\\space TEXTWIDTH=\\the\\textwidth}", "\\usebox0", "\\end{table}"]
            if compact else ["\\tiny", "\\input{table.tex}"])
    doc = ["\\pdfobjcompresslevel=0", "\\documentclass{article}", "\\usepackage[T1]{fontenc}", "\\usepackage{booktabs}",
           "\\usepackage{amssymb}", *(["\\usepackage[landscape,margin=2cm]{geometry}"] if landscape else []),
           "\\begin{document}", *body, "\\end{document}", ""]
    shutil.copy(tex, work / "table.tex")
    (work / "doc.tex").write_text("\n".join(doc))
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=work,
                          capture_output=True, text=True, timeout=120)
    log = (work / "doc.log").read_text(errors="replace") if (work / "doc.log").is_file() else proc.stdout
    assert proc.returncode == 0, f"pdflatex failed on {tex}:\n{log[-3000:]}"
    return log, (work / "doc.pdf").read_bytes()


def _page_size(pdf: bytes) -> tuple[float, float]:
    box = re.search(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", pdf)
    assert box, "no /MediaBox in the PDF"
    x0, y0, x1, y1 = map(float, box.groups())
    return x1 - x0, y1 - y0


def _overfull(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]


def _tex_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/tables/*.tex")) + sorted(root.glob("summary/tables/*.tex")) \
        + sorted((root / "two").glob("summary/tables/*.tex"))


@needs_pdflatex
def test_every_tex_file_compiles(written, tmp_path):
    files = _tex_files(written)
    names = {p.name for p in files}
    assert {"effects.tex", "effects_compact.tex", "levels.tex", "variants.tex", "pooled.tex",
            "compact_best-classifier-fid.tex"} <= names, names
    for i, tex in enumerate(files):
        compact = bool(COMPACT.match(tex.name))
        if compact:
            continue  # the next tests, with their page checks
        _compile(tex, tmp_path / str(i), landscape=True, compact=False)


def _width_check(log: str, tex: Path) -> None:
    assert not [w for w in _overfull(log) if w > SLACK_PT], (tex, _overfull(log))
    m = re.search(r"TABLEWIDTH=([\d.]+)pt\s*TEXTWIDTH=([\d.]+)pt", log)
    assert m and float(m.group(1)) <= float(m.group(2)) + SLACK_PT, (tex, m and m.groups())


@needs_pdflatex
@pytest.mark.parametrize("report", ["loo", "aoi", "axes"])
def test_compact_effects_table_fits_a_portrait_page(written, tmp_path, report):
    tex = written / report / "tables" / "effects_compact.tex"
    text = tex.read_text()
    assert text.isascii() and "\\begin{table}" not in text and "\\caption" not in text and "\\label" not in text
    assert all(r in text for r in ("\\toprule", "\\midrule", "\\bottomrule"))
    ratios = re.findall(r"\$\\times\$(\S+) & \[(\S+), (\S+)\]", text)
    assert ratios and all(re.fullmatch(r"\d+\.\d\d", x) for r in ratios for x in r), ratios  # 2 decimals
    log, pdf = _compile(tex, tmp_path, landscape=False, compact=True)
    w, h = _page_size(pdf)
    assert h > w, (w, h)  # portrait
    _width_check(log, tex)


@needs_pdflatex
def test_compact_summary_table_fits_a_landscape_page(written, tmp_path):
    for k, root in enumerate((written, written / "two")):
        tex = root / "summary" / "tables" / "compact_best-classifier-fid.tex"
        text = tex.read_text()
        assert text.isascii() and "\\caption" not in text
        assert re.search(r"\$\\times\$\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] (\$\+\$|\$-\$|\$\\approx\$|\?)", text)
        log, pdf = _compile(tex, tmp_path / str(k), landscape=True, compact=True)
        w, h = _page_size(pdf)
        assert w > h, (w, h)
        if root.name == "two":  # three experiments, one with two levels: fits; six levels do not
            _width_check(log, tex)


def test_existing_tables_keep_their_numbers(written):
    # the wide table is unchanged (significant digits); the compact one rounds the same interval
    eff = (written / "loo" / "tables" / "effects.md").read_text()
    compact = (written / "loo" / "tables" / "effects_compact.md").read_text()
    assert "adjusted 95% CI" in eff and "95% CI (adj.)" in compact
    row = next(line for line in eff.splitlines() if line.startswith("| batch-norm "))
    lo, hi = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", row).groups())
    crow = next(line for line in compact.splitlines() if line.startswith("| batch-norm "))
    clo, chi = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", crow).groups())
    assert abs(clo - lo) <= 0.0051 and abs(chi - hi) <= 0.0051
    report = (written / "loo" / "REPORT.md").read_text()
    assert "tables/effects_compact.tex" in report
    summary = (written / "SUMMARY.md").read_text()
    assert "summary/tables/compact_best-classifier-fid.tex" in summary
