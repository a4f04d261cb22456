set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pytest -q -p no:cacheprovider tests/executor/test_gpu.py tests/executor/test_measure_records.py tests/executor/test_step_cost.py 2>&1 | tail -n 3 | tee "$OUT/gpu-tests.log"
for round in 1 2 3 4 5; do
  for tree in old13 .; do
    name=$([ "$tree" = . ] && echo new || echo old)
    (cd "$tree" && PYTHONPATH=$PWD:/tmp/site python3 -m tuner.benchmarks | tail -n 1 | sed "s/^/step $name $round /") >> "$OUT/speed.log"
    (cd "$tree" && PYTHONPATH=$PWD:/tmp/site python3 benchmarks/bench_serving.py --repeat 3 | tail -n 1 | sed "s/^/serving $name $round /") >> "$OUT/speed.log"
  done
done
python3 - "$OUT/speed.log" <<'PY'
import json, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    kind, tree, rnd, blob = line.split(" ", 3)
    d = json.loads(blob)
    rows.setdefault((kind, tree), []).append(d["seconds"] if kind == "step" else d["wall_s_median"])
for key, v in sorted(rows.items()):
    print(key, "median %.4f min %.4f" % (st.median(v), min(v)), v)
PY
