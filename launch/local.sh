#!/usr/bin/env bash
# Runs N cooperating processes of a jaxcd command on this machine (loopback coordinator), e.g.
#   launch/local.sh 2 python -m jaxcd.train --config configs/fc_siam_diff.py --workdir runs/mp
# Each process gets JAX_PROCESS_ID; --config.distributed=True is appended so
# jax.distributed.initialize() runs. On CPU each process owns its local devices (1 by default,
# more with XLA_FLAGS=--xla_force_host_platform_device_count=K). Exits non-zero if any fails.
set -euo pipefail
n=${1:?usage: launch/local.sh NUM_PROCESSES COMMAND...}; shift
port=${JAX_PORT:-$((20000 + RANDOM % 20000))}
export JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$n
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PROCESS_ID=$i "$@" --config.distributed=True &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
