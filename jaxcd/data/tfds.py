"""The `tfds` source: a dataset built by `jaxcd.data.tfds_builders` (array_record), read without
TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxcd.data.registry import register_source
from jaxcd.errors import DataError, one_line


@register_source("tfds")
def tfds(split: str, tfds_name: str = "", data_dir: str = "", num_bands: int = 0):
  """A dataset prepared by `python -m jaxcd.data.tfds_builders` read back without TensorFlow
  (its records were checked when it was built; `num_bands` is checked by the pipeline)."""
  del num_bands
  return TfdsSource(tfds_name, split, data_dir)


class TfdsSource:
  """Random-access view of a built dataset (array_record), records as the on-disk sources'."""

  def __init__(self, tfds_name: str, split: str, data_dir: str):
    if not tfds_name:
      raise DataError("config.data.tfds_name is empty; name a dataset built by "
                      "jaxcd.data.tfds_builders (e.g. 'sztaki')")
    if not data_dir or not Path(data_dir).expanduser().is_dir():
      raise DataError(f"data_dir {data_dir!r} does not exist; build the dataset first: python -m "
                      f"jaxcd.data.tfds_builders --dataset {tfds_name} --manual_dir ... "
                      f"--data_dir {data_dir}")
    self.tfds_name, self.split = tfds_name, split
    self.data_dir = str(Path(data_dir).expanduser())
    self.layout = f"tfds {tfds_name} (array_record) in {self.data_dir}"
    self._ds = None
    if len(self) == 0:
      raise DataError(f"split {split!r} of tfds {tfds_name} at {self.data_dir} is empty")

  def _source(self):
    if self._ds is None:
      try:
        # From the files' own features.json, not from the builder classes above, so a dataset
        # reads back as it was written.
        import tensorflow_datasets as tfds_lib  # loads only when a tfds dataset is read
        builder = tfds_lib.core.read_only_builder.builder_from_files(self.tfds_name,
                                                                     data_dir=self.data_dir)
        self._ds = builder.as_data_source(split=self.split)
      except Exception as e:  # noqa: BLE001 - TFDS raises several types for a missing build
        raise DataError(f"cannot open tfds {self.tfds_name} split {self.split!r} in "
                        f"{self.data_dir}: {one_line(e)[:300]}") from None
    return self._ds

  def __len__(self) -> int:
    return len(self._source())

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    r = self._source()[index]
    rid = r["id"]
    return {"image_a": np.asarray(r["image_a"]), "image_b": np.asarray(r["image_b"]),
            "label": np.asarray(r["label"]),
            "id": rid.decode() if isinstance(rid, bytes) else str(rid)}

  def label(self, index: int) -> np.ndarray:
    return self[index]["label"]

  @property
  def ids(self) -> list[str]:
    return [self[i]["id"] for i in range(len(self))]

  def __getstate__(self):
    # Reopened in each worker rather than sharing file handles.
    return {**self.__dict__, "_ds": None}

  def __repr__(self) -> str:
    return f"TfdsSource({self.tfds_name}, split={self.split!r}, {len(self)} pairs)"
