# The README's quick start. Both targets build .venv from nothing: the CPU torch wheel first, so that the
# package's open torch requirement is already met and no CUDA build is downloaded.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU := torch==2.13.0

.PHONY: venv demo test lint clean

$(BIN)/survey-deblend: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_CPU)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/survey-deblend

demo: venv
	$(BIN)/survey-deblend demo --workdir demo-work

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check survey_deblend tests benchmarks

clean:
	rm -rf $(VENV) demo-work
