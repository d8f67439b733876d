#!/usr/bin/env bash
# The GPU check, in one command: on a lent GPU machine (one H200, a bare image with CUDA torch and transformers,
# no network) it makes the project importable, runs the CUDA tests and measures training, the wind-tunnel trial
# and decoding, and writes one JSON and one Markdown table. Every step is bounded by `timeout` under one overall
# deadline (default 470 s), so the whole ends inside 8 minutes and a step that overruns costs only itself.
#
#   bash benchmarks/gpu/run.sh                    # on the GPU machine; results in $OUT (default ./gpu-out)
#   bash benchmarks/gpu/run.sh --dry-run          # the same steps on this CPU with tiny shapes (a few minutes)
#   bash benchmarks/gpu/run.sh --dry-run --quick  # the cut tests/test_gpu_script.py runs in CI (under a minute)
#   bash benchmarks/gpu/run.sh --only train_ac_off,train_ac_on   # rerun some steps (names: Steps, below)
#   bash benchmarks/gpu/run.sh --fetch-wheels     # here, with network: the wheels of benchmarks/gpu/wheels.txt
#                                                 # into .whl/, for the device run to carry (`carry: [".whl"]`)
#
# Steps: wheels, install (pip install --no-deps -e . with the image's torch and transformers), env, matmul (the
# card's measured bf16 rate: the MFU denominator), tests (pytest -m cuda tests/cuda), train_ac_off
# (benchmarks/bench_train.py, Xmodel-2 1.2B, seq 4,096, bf16, compiled), trial (nano μP trial: trials per
# GPU-hour at the Table 5 budget), decode (the engine at batch 1 and 32), train_ac_on (as train_ac_off, with
# activation checkpointing), decode_compiled (batch 1, compiled), then report.
# Output files: gpu-results.json, gpu-results.md, run.log, junit.xml.
# Environment: OUT, PYTHON (default python3; .venv/bin/python in a dry run), GPU_RUN_BUDGET (seconds),
# GPU_TRAIN_BATCH (default 4 sequences of 4,096), PYTEST_WORKERS (default 6, with pytest-xdist).
set -uo pipefail
{  # read to the closing brace before running, so editing this file mid-run cannot change what runs
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

DRY=0 QUICK=0 ONLY="" SKIP="" FAILED=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --quick) QUICK=1 ;;
    --only) ONLY=",$2,"; shift ;;
    --skip) SKIP=",$2,"; shift ;;
    --fetch-wheels)
      mkdir -p .whl
      grep -v '^#' benchmarks/gpu/wheels.txt | grep . | xargs "${PYTHON:-python3}" -m pip download --no-deps \
        --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl
      exit $? ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/xmodel-gpu.XXXXXX")"
LOG="$WORK/run.log"
SITE="$WORK/site"
if [ -z "${PYTHON:-}" ]; then
  if [ "$DRY" = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ "$DRY" = 1 ]; then MODE=dry-run; BUDGET="${GPU_RUN_BUDGET:-900}"; else MODE=gpu; BUDGET="${GPU_RUN_BUDGET:-470}"; fi
[ "$QUICK" = 1 ] && MODE="$MODE-quick"
RESERVE=20            # seconds kept for the report
START=$SECONDS
DEADLINE=$((SECONDS + BUDGET))
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
echo "run.sh: $MODE, python $PYTHON, budget ${BUDGET}s, work $WORK, out $OUT" | tee "$LOG"

wanted() {  # is step $1 selected by --only / --skip?
  { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; } && [[ "$SKIP" != *",$1,"* ]]
}

record() {  # name status rc seconds limit
  printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit": %s}\n' "$@" >>"$WORK/steps.jsonl"
}

# step NAME SECONDS CMD...: run CMD under `timeout` (the step's cap or what is left before the deadline), its
# output to the terminal and the log; record ok / failed / timeout / skipped.
step() {
  local name=$1 cap=$2
  shift 2
  if ! wanted "$name"; then return 0; fi
  local left=$((DEADLINE - SECONDS - RESERVE))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped, ${left}s left before the deadline" | tee -a "$LOG"
    record "$name" skipped null 0 "$limit"
    return 0
  fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; elif [ "$rc" != 0 ]; then status=failed; fi
  printf '\n== %s: %s (rc %s, %ss)\n' "$name" "$status" "$rc" "$((SECONDS - t0))" | tee -a "$LOG"
  [ "$status" = ok ] || FAILED="$FAILED $name"
  record "$name" "$status" "$rc" "$((SECONDS - t0))" "$limit"
}

skipped() {  # name reason
  if wanted "$1"; then echo "== $1: skipped ($2)" | tee -a "$LOG"; record "$1" "skipped" null 0 0; fi
}

# ---- 1. the project on the image's torch and transformers ------------------------------------------------
if [ "$DRY" = 1 ]; then
  skipped wheels "dry run: this environment has the packages"
  skipped install "dry run: this environment has the package installed"
else
  if compgen -G ".whl/*.whl" >/dev/null; then
    step wheels 60 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl
  else
    skipped wheels "no .whl/ carried: the server test will fail without FastAPI (run.sh --fetch-wheels)"
  fi
  step install 90 "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi
# Whatever the install did, src/ and the carried wheels come first (the image has no datatrove, lm-eval,
# optuna or gguf: nothing on the GPU paths imports them at import time).
export PYTHONPATH="$REPO/src:$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DRY" = 1 ]; then
  export XMODEL_CUDA_TESTS_DEVICE=cpu
  DEVICE=cpu
else
  DEVICE=cuda
fi

step env 60 "$PYTHON" benchmarks/gpu/measure.py env --out "$WORK/env.json"
step matmul 60 "$PYTHON" benchmarks/gpu/measure.py matmul --device "$DEVICE" --out "$WORK/matmul.json"
PEAK="$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['bf16_matmul_flops'])" \
        "$WORK/matmul.json" 2>/dev/null || true)"
PEAK_ARGS=()
[ -n "$PEAK" ] && PEAK_ARGS=(--peak-flops "$PEAK")

# ---- 2. the CUDA tests ------------------------------------------------------------------------------------
PYTEST_ARGS=(-m cuda tests/cuda -q -p no:cacheprovider -o addopts= -rfEs --junitxml "$WORK/junit.xml")
if [ "$DRY" = 0 ] && "$PYTHON" -c "import xdist" 2>/dev/null; then
  PYTEST_ARGS+=(-n "${PYTEST_WORKERS:-6}")
fi
if [ "$QUICK" = 1 ]; then  # no compilation, no subprocess runs: the cut that keeps the CI test short
  PYTEST_ARGS+=(-k "not compiled and not compile and not sigkill and not torchrun and not flex and not bf16 and not mup")
fi
step tests "$([ "$DRY" = 1 ] && echo 480 || echo 200)" "$PYTHON" -m pytest "${PYTEST_ARGS[@]}"

# ---- 3. measurements --------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  TRAIN=(--device cpu --preset nano --batch 1 --seq 64 --steps 2)
  TRIAL=(--device cpu --seq 64 --micro-batch 2 --steps 4 --warmup 1)
  DECODE=(--device cpu --preset nano --prompt 16 --new 8 --rounds 2 --batches 1 4)
else
  TRAIN=(--device cuda --preset xmodel-2-1.2b --batch "${GPU_TRAIN_BATCH:-4}" --seq 4096 --steps 5)
  TRIAL=(--device cuda)
  DECODE=(--device cuda)
fi
VARIANT="xmodel bf16 chunked-loss compile"
if [ "$QUICK" = 1 ]; then  # the same steps, fewer rounds, nothing compiled
  TRAIN+=(--no-compile --steps 1)
  VARIANT="xmodel bf16 chunked-loss"
  TRIAL+=(--compile off --steps 3)
  DECODE+=(--rounds 1 --new 4)
fi
# Cheapest first after the main figure: if the deadline cuts anything it is the activation-checkpointing variant
# (its compile is the longest) or the compiled decode, which `--only train_ac_on,decode_compiled` reruns.
step train_ac_off 170 "$PYTHON" benchmarks/bench_train.py "${TRAIN[@]}" --no-baselines --variants "$VARIANT" \
  "${PEAK_ARGS[@]}" --json "$WORK/train_ac_off.json"
step trial 100 "$PYTHON" benchmarks/gpu/measure.py trial "${TRIAL[@]}" --out "$WORK/trial.json"
step decode 90 "$PYTHON" benchmarks/gpu/measure.py decode "${DECODE[@]}" --out "$WORK/decode.json"
step train_ac_on 200 "$PYTHON" benchmarks/bench_train.py "${TRAIN[@]}" --no-baselines --variants "$VARIANT" \
  --activation-checkpointing "${PEAK_ARGS[@]}" --json "$WORK/train_ac_on.json"
if [ "$QUICK" = 1 ]; then
  skipped decode_compiled "quick: no compilation"
else
  # Last, as it may not fit: inductor's max-autotune GEMM search for every shape of the decode graph.
  step decode_compiled 150 "$PYTHON" benchmarks/gpu/measure.py decode "${DECODE[@]}" --batches 1 --compiled on \
    --out "$WORK/decode_compiled.json"
fi

# ---- 4. one JSON and one table ----------------------------------------------------------------------------
timeout -k 5 60 "$PYTHON" benchmarks/gpu/measure.py report --work "$WORK" --out "$OUT" --mode "$MODE" \
  --started "$STARTED" --wall "$((SECONDS - START))" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
cp "$LOG" "$OUT/run.log"
[ -f "$WORK/junit.xml" ] && cp "$WORK/junit.xml" "$OUT/junit.xml"
echo "run.sh: done in $((SECONDS - START))s; results in $OUT${FAILED:+; failed or timed out:$FAILED}"
# Exit 0 only when every step that ran passed (skipped steps do not count) and the report was written.
[ -z "$FAILED" ] || rc=1
exit "$rc"
}
