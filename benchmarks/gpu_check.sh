#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a lent GPU machine, in one call of about 5 minutes.
#
# That machine has Python 3.12 with torch, numpy, scipy, onnx and onnxruntime (CPU build), but
# not pydantic, and it cannot download: the wheels travel with the working tree. Here, once:
#
#     bash benchmarks/gpu_check.sh --fetch-wheels      # writes .whl/ (ignored by git), ~3 MB
#
# then through the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"]),
# and here: python benchmarks/gpu_check.py --record <files_at>/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(pydantic==2.13.5 pydantic_core==2.46.5 annotated_types==0.8.0 typing_inspection==0.4.5)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
  ls -l .whl
  exit 0
fi

if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
out="${OUT:-.}"
python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.log"
