#!/usr/bin/env bash
# `tune predict` as the CLI runs it (a short verb: no cyclic garbage collector, objects frozen at
# exit; tuner.cli._run_short) against the same command line through main(argv), which leaves
# the collector on: interleaved, 25 runs each, wall time. Run from the repository root.
tune="${TUNE:-.venv/bin/tune}"
python="${PYTHON:-.venv/bin/python}"
args="predict --model llama-3.1-8b --hardware h100-sxm --batch 8 --prompt 2048 --context 1024"
for i in $(seq 1 25); do
    s=$(date +%s%N); env -u PYTHONDONTWRITEBYTECODE $tune $args > /dev/null; e=$(date +%s%N)
    echo "short-verb $(( (e - s) / 100000 ))"
    s=$(date +%s%N)
    env -u PYTHONDONTWRITEBYTECODE $python -c "import sys; from tuner.cli import main; sys.exit(main(sys.argv[1:]))" $args > /dev/null
    e=$(date +%s%N)
    echo "collector-on $(( (e - s) / 100000 ))"
done | awk '{a[$1] = a[$1] " " $2} END {for (k in a) print k, a[k]}' | python3 -c "
import statistics, sys
for line in sys.stdin:
    name, *tenths = line.split()
    ms = [int(t) / 10 for t in tenths]
    print(f'{name}: median {statistics.median(ms):.1f} ms, min {min(ms):.1f} ms, n={len(ms)}')"
