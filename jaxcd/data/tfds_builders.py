"""TFDS builders that turn the public datasets into array_record files, without TensorFlow.

Each builder reads `manual_dir` through the matching jaxcd source (so layouts, tiling, splits and
label encodings are the sources') and writes array_record files of `tfds.features.Tensor`
features: TFDS serializes those with numpy and reads them back with `array_record`, so neither
preparation nor reading imports TensorFlow (checked with tensorflow-datasets 4.9.10). Records
keep the source's order (`disable_shuffling`), so `built[i]` is `source[i]`.

Build, then train from the files with `config.data.name = "tfds"`:
  python -m jaxcd.data.tfds_builders --dataset sztaki --manual_dir ../shared/data/SZTAKI_AirChange \
      --data_dir ~/tensorflow_datasets
  make_source("tfds", "train", tfds_name="sztaki", data_dir="~/tensorflow_datasets")

Builder names: levir_cd, whu_cd, cdd, sztaki, and folder_cd (a user's folder dataset).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxcd.data import make_source
from jaxcd.errors import DataError, JaxcdError, one_line


# Run as `python -m`, this file is `__main__`; registering its builders there as well as under
# jaxcd.data.tfds_builders would clash in TFDS's registry.
_REGISTER = __name__ != "__main__"


class ChangeDetectionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: one split per source split, records {image_a, image_b, label, id}."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release (jaxcd)."}
  SOURCE = ""  # registered jaxcd source read from manual_dir
  SPLITS = ("train", "val", "test")
  NUM_BANDS: int | None = 3  # None: any band count
  HOMEPAGE = ""
  CITATION = ""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the dataset, as its authors distribute it, in manual_dir."
  # TFDS looks for a checksums file next to the code through `importlib_resources`, a package
  # it does not depend on; data from manual_dir has no checksums, so there is nothing to find.
  code_path = None

  def __init__(self, *, source_kwargs: dict[str, Any] | None = None, **kwargs: Any):
    # Options of the jaxcd source (tile_size, split_dir, label_encoding, ...).
    self.source_kwargs = dict(source_kwargs or {})
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    bands = self.NUM_BANDS
    # Tensors with several unknown dimensions need an encoding. Images as raw bytes: on SZTAKI
    # zlib made the build 40 MB instead of 41 MB but read 3x slower (199 vs 616 records/s);
    # masks as zlib: SZTAKI's shrink 135x.
    image = tfds.features.Tensor(shape=(None, None, bands), dtype=np.uint8, encoding="bytes")
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Bitemporal change detection pairs read by jaxcd source '{self.SOURCE}'.",
        features=tfds.features.FeaturesDict({
            "image_a": image,
            "image_b": image,
            "label": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
            "id": tfds.features.Text(),
        }),
        disable_shuffling=True,
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION or None,
    )

  def _split_generators(self, dl_manager):
    manual_dir = str(dl_manager.manual_dir)
    kwargs = {**({"num_bands": self.NUM_BANDS} if self.NUM_BANDS else {}), **self.source_kwargs}
    sources = {s: make_source(self.SOURCE, s, data_dir=manual_dir, **kwargs) for s in self.SPLITS}
    return {s: self._generate_examples(src) for s, src in sources.items()}

  def _generate_examples(self, source):
    for i in range(len(source)):
      r = source[i]
      yield r["id"], {"image_a": r["image_a"], "image_b": r["image_b"], "label": r["label"],
                      "id": r["id"]}


class LevirCd(ChangeDetectionBuilder, skip_registration=not _REGISTER):
  """LEVIR-CD (Chen & Shi 2020): 1024x1024 originals tiled to 256, or LEVIR-CD256."""
  SOURCE = "levir_cd"
  HOMEPAGE = "https://justchenhao.github.io/LEVIR/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir/{train,val,test}/{A,B,label}/*.png from the authors."


class WhuCd(ChangeDetectionBuilder, skip_registration=not _REGISTER):
  """WHU-CD building change detection (Ji et al. 2019), stored 6:1:3 split."""
  SOURCE = "whu_cd"
  HOMEPAGE = "http://gpcv.whu.edu.cn/data/building_dataset.html"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir/{A,B,label}: the large pair or pre-cut tiles."


class Cdd(ChangeDetectionBuilder, skip_registration=not _REGISTER):
  """CDD season-varying change detection (Lebedev et al. 2018)."""
  SOURCE = "cdd"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir/subset/{train,val,test}/{A,B,OUT} from the authors."


class Sztaki(ChangeDetectionBuilder, skip_registration=not _REGISTER):
  """SZTAKI AirChange (Benedek & Sziranyi 2009), RCL protocol tiles."""
  SOURCE = "sztaki"
  HOMEPAGE = "http://web.eee.sztaki.hu/remotesensing/airchange_benchmark.html"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir/{Szada/1..7,Tiszadob/1..5,Archieve}/{im1,im2,gt}.bmp"


class FolderCd(ChangeDetectionBuilder, skip_registration=not _REGISTER):
  """A user's folder dataset (jaxcd source 'folder'), any band count."""
  SOURCE = "folder"
  NUM_BANDS = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir/<split>/{A,B,label} or {A,B,label} + list/<split>.txt."


BUILDERS = {b.SOURCE if b is not FolderCd else "folder_cd": b
            for b in (LevirCd, WhuCd, Cdd, Sztaki, FolderCd)}


def build(dataset: str, manual_dir: str, data_dir: str, **source_kwargs: Any) -> Path:
  """Prepares `dataset` (a builder name) from manual_dir into data_dir; returns its folder."""
  if dataset not in BUILDERS:
    raise DataError(f"unknown tfds builder {dataset!r}; known: {', '.join(sorted(BUILDERS))}")
  if not Path(manual_dir).is_dir():
    raise DataError(f"manual_dir {manual_dir} does not exist")
  builder = BUILDERS[dataset](data_dir=data_dir, source_kwargs=source_kwargs)
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return Path(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", required=True, choices=sorted(BUILDERS))
  parser.add_argument("--manual_dir", required=True, help="the dataset as its authors ship it")
  parser.add_argument("--data_dir", required=True, help="where the array_record files go")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a source option, e.g. --set tile_size=512")
  args = parser.parse_args(argv)
  from jaxcd.data.describe import parse_sets  # one parser for --set in both command lines
  try:
    options = parse_sets(args.set, BUILDERS[args.dataset].SOURCE)
    out = build(args.dataset, args.manual_dir, args.data_dir, **options)
  except JaxcdError as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 2
  print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
