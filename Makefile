# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create or refresh .venv/ when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS := --disable-pip-version-check --quiet --constraint constraints.txt
DEMO_OUT ?= demo_out

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fluoseg demo --out $(DEMO_OUT) --overwrite

# Qt runs offscreen: the napari widget tests need no display (they use napari's viewer
# model, so no OpenGL either); npe2 checks the plugin manifest and its imports.
test: $(STAMP)
	$(BIN)/npe2 validate src/fluoseg/napari/napari.yaml --imports
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
