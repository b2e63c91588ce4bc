# One command each, on a fresh machine (Python 3.10+ with venv, a C compiler):
#   make app    set up and run the drawing app on the shipped weights
#   make test   set up and run the test suite (against the installed package, as users get it)
#   make bench  set up and run the benchmark
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: app test bench clean

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

app: $(PYTHON)
	$(PYTHON) -m pip install --quiet '.[gui]'
	$(VENV)/bin/fastmnist gui

test: $(PYTHON)
	$(PYTHON) -m pip install --quiet '.[test,train,gui]'
	cd tests && ../$(VENV)/bin/pytest -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: $(PYTHON)
	$(PYTHON) -m pip install --quiet '.[bench]'
	$(PYTHON) benchmarks/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info fastmnist/_engine.c fastmnist/*.so
