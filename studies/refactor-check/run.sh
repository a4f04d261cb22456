#!/usr/bin/env bash
# One device call: the executor after the typed-records change (its GPU tests, a smoke bench,
# `tune measure`), then the step model and the serving simulation timed before and after the
# architecture refactor on the same machine, interleaved (old, new, old, new, ...).
# Needs the tree before the refactor unpacked in old13/ (git archive af93b1c).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
# pydantic and pyyaml are not on the GPU machines: carried as wheels (.whl/).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -c "import torch, pydantic, yaml, numpy; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'numpy', numpy.__version__, 'pydantic', pydantic.__version__)"
nproc
python3 -m pytest -q -p no:cacheprovider tests/executor/test_gpu.py tests/executor/test_measure_records.py tests/executor/test_step_cost.py 2>&1 | tail -n 4 | tee "$OUT/gpu-tests.log"
python3 -m executor.bench --suite model --smoke --no-extras --out "$OUT/smoke" > "$OUT/smoke.log" 2>&1; tail -n 12 "$OUT/smoke.log"
cp "$OUT/smoke/model.json" "$OUT/smoke-model.json" 2>/dev/null; rm -rf "$OUT/smoke"
python3 -m tuner.cli measure --model llama-3.1-8b --batch 8 --prompt 2048 --context 1024 --json > "$OUT/measure.json" 2> "$OUT/measure.err"; echo "measure rc $?"; head -c 600 "$OUT/measure.json"; cat "$OUT/measure.err" | tail -n 3
for round in 1 2 3 4 5; do
  for tree in old13 .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    (cd "$tree" && PYTHONPATH=$PWD:/tmp/site python3 -m tuner.benchmarks | tail -n 1 | sed "s/^/step $name $round /") | tee -a "$OUT/speed.log"
    (cd "$tree" && PYTHONPATH=$PWD:/tmp/site python3 benchmarks/bench_serving.py --repeat 3 | tail -n 1 | sed "s/^/serving $name $round /") | tee -a "$OUT/speed.log"
  done
done
