# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create or refresh .venv/ when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Cellpose 3 (a reference for one metric cross-check) pins numpy < 2.1: it gets its own venv.
REF_VENV := .venv-cellpose
REF_STAMP := $(REF_VENV)/.installed
PIP_FLAGS := --disable-pip-version-check --quiet --constraint constraints.txt
DEMO_OUT ?= demo_out

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[test]'
	touch $(STAMP)

$(REF_STAMP): constraints.txt
	test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(REF_VENV)/bin/python -m pip install $(PIP_FLAGS) cellpose==3.1.1.3 pytest pyyaml scikit-image
	touch $(REF_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fluoseg demo --out $(DEMO_OUT) --overwrite

# Qt runs offscreen: the napari widget tests need no display (they use napari's viewer
# model, so no OpenGL either); npe2 checks the plugin manifest and its imports.
test: $(STAMP) $(REF_STAMP)
	$(BIN)/npe2 validate src/fluoseg/napari/napari.yaml --imports
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q
	PYTHONPATH=src $(REF_VENV)/bin/python -m pytest -q -m cellpose tests/metrics/test_aji.py

clean:
	rm -rf $(VENV) $(REF_VENV) $(DEMO_OUT) .pytest_cache
