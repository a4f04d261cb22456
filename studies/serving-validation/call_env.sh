# Sourced by next_call2.sh and later, on the GPU machine from the repository root: the
# device's missing packages (from .whl/, carried), $here, $results (this call's outputs) and
# `pack`, which tars $results into $OUT/results.tar (run after each step, so that a call cut
# short keeps what it finished), and the card: $results/nvidia-smi.csv, and $card (h100 or
# h200: whose plans to run).
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
here=studies/serving-validation
results=/tmp/results
mkdir -p $results
pack() { tar -cf "$OUT/results.tar" -C $results . ; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    > $results/nvidia-smi.csv
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) card=h200 ;;
    *) card=h100 ;;
esac
