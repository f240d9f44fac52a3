#!/usr/bin/env bash
# Fetches, on a machine with a package index, the wheels that an offline GPU machine whose
# Python image already holds jax, flax, optax, orbax, etils, scipy and matplotlib lacks for jaxcd
# (grain, faiss, rasterio, ml_collections and what they need beyond such an image), at this
# machine's versions, for that machine's Python:
#   launch/offline_wheels.sh 3.12 .whl     # then take .whl/ along and run launch/gpu_suite.sh
set -euo pipefail
py=${1:?usage: launch/offline_wheels.sh PYTHON_VERSION [DIR]}; dir=${2:-.whl}
pkgs=(grain array_record portpicker dm-tree ml_collections faiss-cpu rasterio affine cligj
      click-plugins tensorboardX)
specs=()
for p in "${pkgs[@]}"; do  # pin to what this environment runs, where it has the package
  v=$(python -m pip show "$p" 2>/dev/null | sed -n 's/^Version: //p')
  specs+=("$p${v:+==$v}")
done
plats=()
for p in manylinux1 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
         manylinux_2_31 manylinux_2_34 manylinux_2_35; do
  plats+=(--platform "${p}_x86_64")
done
mkdir -p "$dir"
python -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${plats[@]}" -d "$dir" "${specs[@]}"
ls "$dir"
