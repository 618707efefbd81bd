#!/usr/bin/env bash
# The speed benchmarks on the first GPU at hand, in one run of a few minutes, with the card's name recorded.
#
#   bash bench/gpu.sh                    # from the repository root, on a machine with an NVIDIA GPU and PyPI access
#   RESULTS=gpu-results.md bash bench/gpu.sh
#   VENV=/path/to/venv bash bench/gpu.sh # use (or create) this virtual environment
#
# What it does:
#   1. a virtual environment (.venv-gpu unless VENV is set): reuses a Python whose torch already sees CUDA
#      (system site-packages, so a preinstalled CUDA torch is kept), otherwise installs `torch` from PyPI (its
#      Linux wheels are CUDA builds); then ownlm with the dev extras (transformers, peft: the peers);
#   2. training speed, 124M and tiny shapes: transformers fp32 / bf16 autocast against ownlm fp32, --dtype auto
#      (bf16 on this card) and --compile (bench/bench_train_speed.py; on CUDA it runs on the GPU);
#   3. LoRA and full SFT on the GPU (bench_sft_speed.py --device cuda, against transformers + peft), serving on
#      the GPU (bench_serve.py --device cuda), and generation (bench_generate.py, which still runs on the CPU: its
#      rows are the box's CPU figures until it takes a --device);
#   4. appends the date, the card (nvidia-smi --query-gpu=name,memory.total,driver_version), torch's version and
#      every benchmark's output to RESULTS (default bench/gpu-results.md), and prints where it is.
# A benchmark that fails is recorded as failed and the others still run; the exit code is 1 if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/gpu-results.md}
VENV=${VENV:-.venv-gpu}
PY=${PYTHON:-python3}
STEPS=${STEPS:-20}  # timed training steps per setting (a GPU step of the 124M shape takes milliseconds)

command -v nvidia-smi >/dev/null || { echo "bench/gpu.sh: no nvidia-smi here: this script is for a GPU machine" >&2; exit 2; }

if [ ! -x "$VENV/bin/python" ]; then
    if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        "$PY" -m venv --system-site-packages "$VENV"  # keep the machine's CUDA torch
    else
        "$PY" -m venv "$VENV"
    fi
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
if ! "$VPY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    "$VPY" -m pip install -q torch  # PyPI's Linux wheel bundles CUDA
fi
"$VPY" -m pip install -q -e ".[dev]"
"$VPY" -c 'import torch; assert torch.cuda.is_available(), "torch does not see a CUDA GPU"' || exit 2

failed=0
{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
    echo
    echo "torch $("$VPY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'), ownlm $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPU cores"
} >>"$RESULTS"

run() {  # run NAME CMD...: its output into RESULTS as a code block, and to the terminal
    local name=$1
    shift
    echo "== $name: $*"
    local t0=$SECONDS out rc
    out=$("$@" 2>&1)
    rc=$?
    echo "$out" | tail -40
    {
        echo
        echo "### $name ($((SECONDS - t0)) s$([ $rc -ne 0 ] && echo ", FAILED with exit code $rc"))"
        echo
        echo '```'
        echo "\$ $*"
        echo "$out" | grep -v '^\[{' | tail -40  # the final JSON dump is long; the table above it says it all
        echo '```'
    } >>"$RESULTS"
    [ $rc -eq 0 ] || failed=1
}

run "training speed, 124M and tiny (bf16 autocast, --compile)" \
    "$VPY" bench/bench_train_speed.py --steps "$STEPS" --threads "$(nproc)"
run "SFT speed, full and LoRA, gpt2 shape, bf16" \
    "$VPY" bench/bench_sft_speed.py --shapes gpt2 --dtype bf16 --device cuda --threads "$(nproc)"
run "generation, 124M, bf16 (CPU)" \
    "$VPY" bench/bench_generate.py --dtype bfloat16 --threads "$(nproc)"
run "serving, mini" \
    "$VPY" bench/bench_serve.py --device cuda --clients 1 8 16 --requests 2 --threads "$(nproc)"

echo "figures appended to $RESULTS"
exit $failed
