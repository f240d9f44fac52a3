"""TFDS builders write array_record files without TensorFlow; the `tfds` source reads them back."""
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcd.data import make_source, tfds_builders
from jaxcd.data.folder import folder
from jaxcd.data.sztaki import sztaki
from jaxcd.errors import DataError

SZTAKI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "SZTAKI_AirChange"


def _assert_same(built, src):
  assert len(built) == len(src) > 0
  for i in range(len(src)):
    a, b = built[i], src[i]
    assert a["id"] == b["id"] and isinstance(a["id"], str)
    for key in ("image_a", "image_b", "label"):
      assert a[key].dtype == np.uint8
      np.testing.assert_array_equal(a[key], b[key])


def test_folder_dataset_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  manual = tmp_path / "manual"
  for split, n in (("train", 3), ("val", 2), ("test", 2)):
    for k in range(n):
      for d in ("A", "B"):
        path = manual / split / d / f"{split}{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(path)
      label = (rng.random((64, 48)) < 0.2).astype(np.uint8) * 255
      (manual / split / "label").mkdir(exist_ok=True)
      Image.fromarray(label).save(manual / split / "label" / f"{split}{k}.png")

  out = tfds_builders.build("folder_cd", str(manual), str(tmp_path / "built"))
  files = sorted(p.name for p in out.iterdir())
  assert any(f.startswith("folder_cd-train.array_record") for f in files), files
  for split in ("train", "val", "test"):
    built = make_source("tfds", split, tfds_name="folder_cd", data_dir=str(tmp_path / "built"),
                        num_bands=3)
    _assert_same(built, folder(split, data_dir=str(manual)))
  clone = pickle.loads(pickle.dumps(built))  # grain workers get a copy
  np.testing.assert_array_equal(clone[1]["image_b"], built[1]["image_b"])


@pytest.mark.skipif(not SZTAKI.is_dir(), reason=f"shared data not found at {SZTAKI}")
def test_sztaki_builds_and_reads_back_identically(tmp_path):
  tfds_builders.build("sztaki", str(SZTAKI), str(tmp_path))
  for split in ("train", "val", "test"):
    _assert_same(make_source("tfds", split, tfds_name="sztaki", data_dir=str(tmp_path)),
                 sztaki(split, data_dir=str(SZTAKI)))


def test_missing_build_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match="tfds_name"):
    make_source("tfds", "train", tfds_name="", data_dir=str(tmp_path))
  with pytest.raises(DataError, match="sztaki"):
    make_source("tfds", "train", tfds_name="sztaki", data_dir=str(tmp_path))
  with pytest.raises(DataError, match="does not exist"):
    make_source("tfds", "train", tfds_name="sztaki", data_dir=str(tmp_path / "nope"))
