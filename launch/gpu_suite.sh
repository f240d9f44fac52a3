#!/usr/bin/env bash
# `python -m jaxcd.bench --suite gpu` on a GPU machine with no network, in one go: installs the
# wheels of .whl/ (launch/offline_wheels.sh) beside the image's own packages, says which devices
# jax sees, runs the suite, and leaves suite.json, suite.md and its log in OUT.
#   launch/gpu_suite.sh runs/gpu_suite            # from the repository root
#   launch/gpu_suite.sh /tmp/s --quick            # the same plumbing on any CPU
set -euo pipefail
out=${1:?usage: launch/gpu_suite.sh OUT [BENCH_FLAGS...]}; shift
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  site=${TMPDIR:-/tmp}/jaxcd-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
"$py" -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())' \
  2>&1 | tee "$out/devices.txt"
"$py" -m jaxcd.bench --suite gpu --out "$out" "$@" 2>&1 | tee "$out/suite.log"
cat "$out/suite.md"
