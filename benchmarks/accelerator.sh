#!/usr/bin/env bash
# The accelerator runbook: every benchmark of this project on the device jax sees, one results
# page per benchmark named after the device, in one command (sized for about 8 minutes on one
# GPU; not yet run on one).
#
#   bash benchmarks/accelerator.sh [--out DIR]      # the device's figures
#   bash benchmarks/accelerator.sh --smoke          # CPU check of the runbook itself, < 1 min
#
# Writes DIR/<benchmark>_<device>.{json,md} (DIR: benchmarks/results), <device> from jax's
# device_kind (e.g. nvidia_h200; cpu):
#   epoch_time   training-epoch time of recgoat-reference and LightGCN at d = 64, 256, 800 on
#                `baby` (JAX; the PyTorch port joins only where torch sees a CUDA device, which
#                the port does not use yet, so it is left out on accelerators);
#   roofline     the device's measured matmul, exp and memory rates and each epoch's floor;
#   sweep        sweep_throughput: S members of one group vs S solo runs (vmapped default);
#   scaling      data-parallel steps on every device jax sees (only with more than one).
# Each step's log goes to DIR/accelerator_<device>.log; a failing step is reported and the
# others still run (exit status 1 at the end).
set -u
cd "$(dirname "$0")/.."

OUT=benchmarks/results
SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "accelerator.sh: error: unknown option '$1' (expected --smoke, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"

PY=${PYTHON:-python3}
read -r DEVICE N_DEVICES < <($PY -c "import jax, re; print(re.sub(r'[^a-z0-9]+', '_', jax.devices()[0].device_kind.lower()).strip('_'), jax.device_count())") \
  && [ -n "${DEVICE:-}" ] || {
  echo "accelerator.sh: error: jax does not start here (install the project first)" >&2; exit 2; }
TAG="_${DEVICE}"
LOG="$OUT/accelerator${TAG}.log"
: > "$LOG"

if [ "$SMOKE" = 1 ]; then  # tiny sizes: checks that every step runs, measures nothing useful
  EPOCH=(--preset tiny --dims 16 --epochs-measured 1 --frameworks jax)
  ROOF=(--preset tiny --dims 16 --no-xla --quick-rates)
  SWEEP=(--preset tiny --epochs 1 --wait-quiet-min 0 --models lightgcn --members-lightgcn 2 --layouts one_by_one)
else
  EPOCH=(--preset baby --dims 64,256,800 --epochs-measured 3 --frameworks jax)
  ROOF=(--preset baby --dims 64,256,800 --components)
  SWEEP=(--members-lightgcn 1,2,4,8,16,32 --members-recgoat 1,2,4,8 --wait-quiet-min 0)
fi

FAILED=()
step() {  # step NAME COMMAND...: run, log, remember a failure
  local name=$1; shift
  echo "== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  if "$@" >> "$LOG" 2>&1; then
    echo "   done in $((SECONDS - t0)) s" | tee -a "$LOG"
  else
    echo "   FAILED after $((SECONDS - t0)) s (see $LOG)" | tee -a "$LOG"
    FAILED+=("$name")
  fi
}

step epoch_time $PY -m benchmarks.epoch_time --models recgoat,lightgcn "${EPOCH[@]}" \
  --out "$OUT" --tag "$TAG"
step roofline $PY -m benchmarks.roofline --models recgoat,lightgcn "${ROOF[@]}" \
  --epoch-json "$OUT/epoch_time${TAG}.json" --out "$OUT" --tag "$TAG"
step sweep_throughput $PY -m benchmarks.sweep_throughput "${SWEEP[@]}" --out "$OUT" --tag "$TAG"
if [ "$N_DEVICES" -gt 1 ] && [ "$SMOKE" = 0 ]; then
  step scaling $PY -m benchmarks.scaling --devices "1,$N_DEVICES" --out "$OUT" --tag "$TAG"
fi

# a benchmark keeps going past a row that fails (and says so in its page): count those too
for page in "$OUT"/*"${TAG}".md; do
  if grep -q '\*\*error\*\*' "$page"; then FAILED+=("rows of $(basename "$page")"); fi
done
echo "device: $DEVICE ($N_DEVICES device(s)); pages in $OUT/*${TAG}.md; log $LOG"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "accelerator.sh: failed steps: ${FAILED[*]}" >&2
  exit 1
fi
