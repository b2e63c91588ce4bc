# One command each, on a fresh machine (Python 3.10+ with venv, a C compiler):
#   make app    set up and run the drawing app on the shipped weights
#   make test   set up and run the test suite (against the installed package, as users get it)
#   make bench  set up and run the benchmark (make bench BENCH_ARGS=--quick: a smoke run)
VENV := .venv
PYTHON := $(VENV)/bin/python
BENCH_ARGS :=
# Qt's own libraries come with PySide6; these system ones it loads too (Debian/Ubuntu names). The tests run
# Qt offscreen and need the first set; the app's window needs the X11 ones as well.
QT_TEST_LIBS := libgl1 libegl1 libfontconfig1 libdbus-1-3 libglib2.0-0 libxkbcommon0
QT_APP_LIBS := $(QT_TEST_LIBS) libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libx11-xcb1
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: app test bench clean

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

# Installs whichever of the given Debian packages are missing (nothing on systems without apt-get).
define system_packages
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then \
		echo "installing system libraries for Qt: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

app: $(PYTHON)
	$(call system_packages,$(QT_APP_LIBS))
	$(PYTHON) -m pip install --quiet '.[gui]'
	$(VENV)/bin/fastmnist gui

test: $(PYTHON)
	$(call system_packages,$(QT_TEST_LIBS))
	$(PYTHON) -m pip install --quiet '.[test,train,gui]'
	cd tests && ../$(VENV)/bin/pytest -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: $(PYTHON)
	$(PYTHON) -m pip install --quiet '.[bench]'
	$(PYTHON) benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info fastmnist/_engine.c fastmnist/*.so
