#!/usr/bin/env bash
# Run the default demo spec on device=cuda and on cpu, and print the throughput of each.
#
# Works from a fresh checkout with any Python that has torch and pydantic (>= 2.7): it uses
# $PYTHON if set, else .venv/bin/python if there is one, else python3. Without CUDA it says so,
# skips the cuda run and still runs cpu. Exit status: 0 when every run that ran completed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1

if ! "$PYTHON" -c "import torch, pydantic" 2>/dev/null; then
  echo "gpu_check: $PYTHON cannot import torch and pydantic; install them (pydantic >= 2.7)" >&2
  exit 2
fi
"$PYTHON" -c "import sys, torch; print(f'python {sys.version.split()[0]}, torch {torch.__version__}, cuda build {torch.version.cuda}')"

status=0
if "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PYTHON" -c "import torch; print('gpu:', torch.cuda.get_device_name(0))"
  "$PYTHON" scripts/run_spec.py --device cuda || status=1
else
  echo "cuda: not available to this torch on this machine; skipping the cuda run"
fi
"$PYTHON" scripts/run_spec.py --device cpu || status=1
exit "$status"
