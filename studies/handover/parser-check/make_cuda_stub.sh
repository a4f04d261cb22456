#!/bin/bash
# Build /work/engine-envs/cuda-stub/libcuda.so.1: a stand-in for the NVIDIA
# driver library so that vLLM's / SGLang's CUDA extension modules can be
# imported on a machine WITHOUT a GPU driver (parse-only use). Every exported
# cu* function returns 100 (CUDA_ERROR_NO_DEVICE). Never put this directory on
# LD_LIBRARY_PATH of a machine that has a real driver.
set -eu
OUT=/work/engine-envs/cuda-stub
mkdir -p "$OUT"
syms=$(mktemp)
printf 'cuInit\ncuDriverGetVersion\ncuGetProcAddress\ncuGetProcAddress_v2\ncuDeviceGetCount\ncuGetExportTable\n' > "$syms"
for env in /work/engine-envs/vllm /work/engine-envs/sglang; do
  [ -d "$env" ] || continue
  find "$env/lib" -name '*.so*' -type f 2>/dev/null | while read -r f; do
    if readelf -d "$f" 2>/dev/null | grep -q 'libcuda.so'; then
      nm -D --undefined-only "$f" 2>/dev/null | awk '{print $2}' | grep -E '^cu[A-Z]' | sed "s/@.*//" || true
    fi
  done >> "$syms"
done
sort -u "$syms" > "$OUT/symbols.txt"; rm -f "$syms"
{
  echo '/* Parse-only stub of libcuda.so.1; every entry point returns CUDA_ERROR_NO_DEVICE (100). */'
  while read -r s; do echo "int $s(void) { return 100; }"; done < "$OUT/symbols.txt"
} > "$OUT/stub.c"
gcc -shared -fPIC -o "$OUT/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$OUT/stub.c"
ln -sf libcuda.so.1 "$OUT/libcuda.so"
echo "built $OUT/libcuda.so.1 with $(wc -l < "$OUT/symbols.txt") symbols"
