#!/usr/bin/env bash
# GPU checks of autointerp on a CUDA machine (one pass, time-boxed; not part of CI):
# environment, scripts/setup.sh, the cache benchmark and `autointerp cache` on CUDA, vLLM.
#   bash scripts/gpu_check.sh     (BUDGET_S=540 seconds in all, N=1048576 tokens, DEVICE=cuda)
#   DRY=1 DEVICE=cpu N=8192 bash scripts/gpu_check.sh   (a local trial: no setup.sh, no installs)
# Small pure-python deps missing on the machine may be carried as wheels in .whl/ (and the
# polars runtime as .whl/prt/{rest.tar,_polars_runtime.abi3.so.xz}); they go to /tmp/site.
# Writes $OUT/gpu_check.log (everything) and $OUT/results.jsonl (one JSON line per step).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-540}
N=${N:-1048576}
N0=${N0:-262144}
DEVICE=${DEVICE:-cuda}
DRY=${DRY:-0}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOG=$OUT/gpu_check.log
RES=$OUT/results.jsonl
exec > >(tee -a "$LOG") 2>&1

left() { echo $((BUDGET_S - SECONDS)); }
# step NAME CAP CMD...: run CMD under min(CAP, time left - 20 s); its last JSON line -> results
step() {
  local name=$1 cap=$2
  shift 2
  local t=$(($(left) - 20))
  ((t > cap)) && t=$cap
  if ((t < 15)); then
    echo "=== $name: SKIPPED (time budget)"
    echo "{\"step\": \"$name\", \"skipped\": \"time budget\"}" >>"$RES"
    return
  fi
  echo "=== $name (timeout ${t}s, t=${SECONDS}s): $*"
  local f t0=$SECONDS last rc
  f=$(mktemp)
  timeout "$t" "$@" 2>&1 | tee "$f"
  rc=${PIPESTATUS[0]}
  last=$(grep '^{' "$f" | tail -1)
  echo "=== $name: rc=$rc wall=$((SECONDS - t0))s"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $((SECONDS - t0)), \"result\": ${last:-null}}" >>"$RES"
  rm -f "$f"
}

echo "=== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nvidia-smi | head -4
uname -m; nproc; free -g | head -2
command -v python python3
python3 -V
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
python3 -m pip --version
python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|safetensors|numpy|pyarrow|polars|pydantic|datasets|openai|tenacity|aiolimiter|typer|rich|psutil|scipy|pyyaml|huggingface.hub|vllm|xgrammar|typing.extensions|httpx|uvloop|setuptools) '
python3 -c 'import vllm; print("vllm", vllm.__version__)' 2>&1 | tail -1
timeout 20 python3 -c 'import urllib.request as u; u.urlopen("https://pypi.org/simple/pip/", timeout=10); print("PyPI: reachable")' 2>&1 | tail -1
git rev-parse --short HEAD 2>/dev/null
git status --short 2>/dev/null | head -20

# scripts/setup.sh as written (it needs PyPI for `pip install --upgrade pip` and the deps)
((DRY)) || step setup_sh 90 env PIP_DEFAULT_TIMEOUT=5 PIP_RETRIES=0 bash scripts/setup.sh

echo "=== carried wheels -> /tmp/site"
export PYTHONPATH=$PWD
if ((!DRY)) && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  if [ -f .whl/prt/rest.tar ]; then
    tar xf .whl/prt/rest.tar -C /tmp/site
    python3 -c 'import lzma, shutil; shutil.copyfileobj(lzma.open(".whl/prt/_polars_runtime.abi3.so.xz"), open("/tmp/site/_polars_runtime_32/_polars_runtime.abi3.so", "wb"))'
  fi
  export PYTHONPATH=/tmp/site:$PWD
fi
python3 -c 'import polars, pydantic, autointerp; from autointerp.cli import app; print("imports ok: polars", polars.__version__, "pydantic", pydantic.__version__)'
# the console script without PyPI (its deps are importable already)
((DRY)) || python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
command -v autointerp || echo "no autointerp console script: python -c 'from autointerp.cli import app; app()' instead"

BENCH="python3 scripts/bench_cache.py --device $DEVICE"
step "bench_ctx64_N$N0" 120 $BENCH --n-tokens "$N0"
step "bench_ctx64_N$N" 200 $BENCH --n-tokens "$N"

# `autointerp cache` itself: wall time, tokens cached, peak RSS of the process
cat >/tmp/cli_cache.py <<'EOF'
import json, resource, shutil, subprocess, sys, time
device, ctx, n, run_dir = sys.argv[1:5]
exe = shutil.which("autointerp")
cmd = [exe] if exe else [sys.executable, "-c", "from autointerp.cli import app; app()"]
cmd += ["cache", "--device", device, "--ctx-len", ctx, "--n-tokens", n, "--run-dir", run_dir,
        "--no-progress"]
print(" ".join(cmd), flush=True)
t0 = time.perf_counter()
rc = subprocess.run(cmd).returncode
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
from autointerp.cache import ActivationCache
from autointerp.config import DEMO_HOOKPOINT
meta = ActivationCache(run_dir, DEMO_HOOKPOINT).meta if rc == 0 else {}
tok = meta.get("n_tokens", 0)
print(json.dumps({"ctx_len": int(ctx), "rc": rc, "tokens": tok, "wall_s": round(wall, 2),
                  "tokens_per_s_wall": round(tok / wall) if tok else None,
                  "peak_rss_mb": round(rss, 1), "n_shards": len(meta.get("shards", []))}))
EOF
rm -rf /tmp/cli64 /tmp/cli256
step cli_cache_ctx64 120 python3 /tmp/cli_cache.py "$DEVICE" 64 "$N" /tmp/cli64
step cli_cache_ctx256 120 python3 /tmp/cli_cache.py "$DEVICE" 256 "$N" /tmp/cli256

if python3 -c 'import vllm' 2>/dev/null; then
  step vllm_bench 240 python3 scripts/bench_vllm_gpu.py --requests 512
else
  echo "=== vllm: not importable: $(python3 -c 'import vllm' 2>&1 | tail -1)"
  echo '{"step": "vllm_bench", "skipped": "vllm not importable"}' >>"$RES"
fi

step "bench_ctx256_N$N" 160 $BENCH --n-tokens "$N" --ctx-len 256
step "bench_ctx64_bs512_N$N" 160 $BENCH --n-tokens "$N" --batch-size 512
((DRY)) || step bench_cpu_ctx64_N65536 120 python3 scripts/bench_cache.py --device cpu --n-tokens 65536
echo "=== done at ${SECONDS}s"
