# Two commands matter: `make demo` (set up + run the main job) and `make test` (set up + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup sysdeps demo test lint bench clean

# Debian packages some systems need: gcc (vMCU C code), arm-none-eabi-gcc + newlib (Cortex-M
# builds), qemu-system-arm (the Cortex-M firmware runs on its mps2-an386/an500 boards),
# redis-server (the serving broker). Installed only when missing; tests that need one
# skip with the reason if it still is (e.g. no root).
sysdeps:
	@missing=""; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	command -v arm-none-eabi-gcc >/dev/null || missing="$$missing gcc-arm-none-eabi libnewlib-arm-none-eabi"; \
	command -v qemu-system-arm >/dev/null || missing="$$missing qemu-system-arm"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing ) \
	    || echo "warning: could not install$$missing; the tests that need them will skip"; \
	fi

setup: $(STAMP)

# torch first, pinned: the local CPU wheel. An unpinned torch would pull several GB of CUDA.
$(STAMP): pyproject.toml
	-@$(MAKE) --no-print-directory sysdeps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/dnninfer report --quick --out report/

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests

bench: setup
	$(BIN)/dnninfer report --out report/

clean:
	rm -rf $(VENV) report .pytest_cache

# Wheels the GPU check (scripts/gpu_check.sh) carries to the lent GPU machine, which has no network:
# exactly scripts/gpu-wheels.txt, cp312 manylinux, without dependencies (that machine has numpy and
# torch; torch is never downloaded). Into .whl/, git-ignored: a device run must name it in `carry`.
.PHONY: gpu-wheels
GPU_PIP := $(if $(wildcard $(BIN)/pip),$(BIN)/pip,$(PY) -m pip)
gpu-wheels:
	@if grep -qiE '^[[:space:]]*torch' scripts/gpu-wheels.txt; then \
	  echo "scripts/gpu-wheels.txt lists torch: the GPU machine brings its own" >&2; exit 1; fi
	rm -rf .whl && mkdir -p .whl
	$(GPU_PIP) download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
	  --python-version 3.12 --implementation cp --abi cp312 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
	  --dest .whl -r scripts/gpu-wheels.txt
	@ls -l .whl
