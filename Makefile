# ablate — two entry points: `make ablation` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= experiments/default.toml
STAMP := $(VENV)/.installed
# The library versions that wrote results/ (a fresh clone's reports come out byte for byte
# as committed); `make clean install CONSTRAINTS=` installs the newest pyproject.toml allows.
CONSTRAINTS ?= constraints.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: install data ablation test lint test-executors bench clean constraints

$(STAMP): pyproject.toml examples/ablate-spectral-norm/pyproject.toml examples/ablate-paper-tricks/pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned: pip takes local wheels where they exist (see README).
	$(PY) -m pip install --quiet $(PIP_C) -e ".[test,inception]"
	# The example third-party hack package, registered through its entry point.
	$(PY) -m pip install --quiet $(PIP_C) --no-build-isolation -e examples/ablate-spectral-norm
	$(PY) -m pip install --quiet $(PIP_C) --no-build-isolation -e examples/ablate-paper-tricks
	touch $(STAMP)

# After upgrading the venv's libraries: pin what it now has (then regenerate the reports).
# `pip list --format=freeze`: name==version even for a package installed from a file.
constraints:
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip list --format=freeze --exclude-editable \
	  | grep -vE '^(#|pip==|setuptools==|wheel==|torch==|torchvision==|triton==|nvidia-|cuda-)'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

install: $(STAMP) data

# Offline data that can be installed: Debian's Fashion-MNIST when apt is available, and
# pdflatex (texlive-latex-recommended, about 1.5 min) for the LaTeX tables' test.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 \
	  && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	  || echo "note: could not install dataset-fashion-mnist; ablate will try to download it"; \
	fi
	@# pdflatex, for tests/test_report_latex.py (compiles every .tex a report writes; skipped without it).
	@if ! command -v pdflatex >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
	  && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq texlive-latex-recommended) >/dev/null 2>&1 \
	  || echo "note: could not install texlive-latex-recommended; tests/test_report_latex.py will be skipped"; \
	fi

# After the grid, refresh results/SUMMARY.md (ablate compare) over every experiment under
# results/ that has a report; one still running (no REPORT.md yet, or an interim one written
# mid-look) is left out.
ablation: install
	$(VENV)/bin/ablate grid $(EXPERIMENT)
	@dirs=$$(for d in results/*/; do [ -f "$$d/experiment.json" ] && [ -f "$$d/REPORT.md" ] \
	  && [ -f "$$d/tables/effects.csv" ] && ! grep -qF '**Interim report:' "$$d/REPORT.md" \
	  && echo "$${d%/}"; done); \
	if [ -n "$$dirs" ]; then echo "ablate compare --out results $$dirs" | tr '\n' ' '; echo; \
	  $(VENV)/bin/ablate compare --out results $$dirs; fi

# The test files run in parallel, each file whole in one worker (pytest-xdist --dist
# loadfile: a module's fixtures are built once): on the 2-core AMD EPYC 7 min 48 s instead
# of about 13 min in one process. At most 4 workers (each loads torch; the process-level
# tests start grids of their own). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= $(shell $(PYTHON) -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(); print(min(4, n or 1))")

test: install lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# Style and unused code (ruff), and the import graph: no cycles, imports point down
# (import-linter contracts in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Opt-in: install Ray (an 80 MB wheel, not in the default install) and run the Ray
# executor (smoke.toml on a local Ray instance) and SLURM executor (submitit's local mode,
# which `make test` runs too: submitit is in the test extra) tests.
test-executors: install
	$(PY) -m pip install --quiet $(PIP_C) -e ".[ray,slurm]"
	$(PY) -m pytest -q tests/test_grid_reliability.py -k "ray or slurm"

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
