#!/usr/bin/env bash
# Runs jaxcd on every host of a Cloud TPU VM slice (e.g. v5e-32): the same command on all
# workers; jax.distributed.initialize() discovers the slice from the TPU metadata.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/cdcluster_levir.py gs-or-nfs/workdir [--config.x=y ...]
# The workdir must be shared by all hosts (GCS path or NFS): orbax writes one checkpoint.
# Data must be reachable from every host (e.g. TFDS array_record files on NFS or GCS).
set -euo pipefail
tpu=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [FLAGS...]}
zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/jaxcd && pip install -q -e . 'jax[tpu]' && python -m jaxcd.train --config $config --workdir $workdir --config.distributed=True$extra"
