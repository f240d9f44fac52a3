#!/usr/bin/env bash
# Runs jaxcd on every host of a Cloud TPU VM slice (e.g. v5e-32): the same command on all
# workers; jax.distributed.initialize() discovers the slice from the TPU metadata.
#   launch/tpu_vm.sh my-tpu us-central2-b configs/cdcluster_levir.py gs://my-bucket/runs/cdc \
#     --config.data.data_dir=gs://my-bucket/data/LEVIR-CD
# The repository must be checked out at ~/jaxcd on every worker. The workdir must be shared by
# all hosts (a gs:// URL or NFS): orbax writes one checkpoint. A gs:// data_dir is copied to each
# host's $JAXCD_CACHE on first use; the VM's service account gives the credentials.
set -euo pipefail
tpu=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [FLAGS...]}
zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/jaxcd && pip install -q -e '.[gcs]' 'jax[tpu]' && python -m jaxcd.train --config $(printf %q "$config") --workdir $(printf %q "$workdir") --config.distributed=True$extra"
