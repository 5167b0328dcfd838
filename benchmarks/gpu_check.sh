#!/usr/bin/env bash
# The GPU path, checked in one go on a machine with an NVIDIA GPU (#22):
#   1. a fresh venv with the `gpu` extra (onnxruntime-gpu, faiss-gpu) and what serving needs;
#   2. the scoring and export tests, which then run on the CUDA provider (the model's default
#      provider order is TensorRT, CUDA, CPU);
#   3. bench_scoring with the CUDA and the TensorRT provider, batch 1 to 4,096, IO binding on
#      and off;
#   4. a short bench_e2e with the CUDA provider;
# and writes every figure into one JSON file, $OUT/gpu_check.json. Budget: under 8 minutes.
#
#   benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#
# --dry-run runs the same steps on CPU in the current environment, small, to prove the
# script works (CI runs it). On a machine that cannot reach PyPI, put the wheels in
# $WHEELS (default .whl) and they are installed from there, offline.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-${OUT:-/tmp/riskstream-gpu-check}}
mkdir -p "$OUT"
LINES="$OUT/lines.jsonl"
: >"$LINES"

if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-python}
  PROVIDER_SETS=("CPUExecutionProvider")
  BATCHES="1,8"
  E2E=(--events 600 --rates 100 --seconds 2 --warmup 100 --rounds 1)
  TESTS=(tests/scoring/test_onnx_model.py -k "io_binding or scores")
  USERS=60
else
  python3 -m venv --system-site-packages "$OUT/venv"
  PY="$OUT/venv/bin/python"
  WHEELS=${WHEELS:-.whl}
  if [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e '.[gpu,embedded]'
  else
    "$PY" -m pip install -q -e '.[gpu,embedded]'
  fi
  PROVIDER_SETS=("CUDAExecutionProvider,CPUExecutionProvider" "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider")
  BATCHES="1,8,32,128,512,1024,4096"
  E2E=(--events 20000 --rates 500,1000 --seconds 10 --rounds 1)
  TESTS=(tests/scoring tests/models/test_export.py)
  USERS=800
fi

echo "== providers"
"$PY" -c "import json, onnxruntime as o; print(json.dumps({'bench': 'ort', 'version': o.__version__, 'available': o.get_available_providers()}))" >>"$LINES"

echo "== tests"
if "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" >"$OUT/tests.log" 2>&1; then status=passed; else status=failed; fi
"$PY" -c "import json,sys; print(json.dumps({'bench': 'tests', 'status': sys.argv[1], 'tail': open(sys.argv[2]).read()[-400:]}))" "$status" "$OUT/tests.log" >>"$LINES"

echo "== bench_scoring"
for providers in "${PROVIDER_SETS[@]}"; do
  for binding in auto always; do
    "$PY" -m benchmarks.bench_scoring --providers "$providers" --batches "$BATCHES" \
      --io-binding "$binding" --repeat 50 --users "$USERS" | grep '^{' >>"$LINES"
  done
done

echo "== bench_e2e"
RISKSTREAM_MODEL__PROVIDERS="[\"${PROVIDER_SETS[0]//,/\",\"}\"]" \
  "$PY" -m benchmarks.bench_e2e "${E2E[@]}" | grep '^{' >>"$LINES"

"$PY" - "$LINES" "$OUT/gpu_check.json" "$DRY" <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"dry_run": sys.argv[3] == "1", "results": lines}, open(sys.argv[2], "w"), indent=1)
print(f"wrote {sys.argv[2]}: {len(lines)} results")
PYEOF
test "$status" = passed
