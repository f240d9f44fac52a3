"""Reading a state dict as `{name: np.ndarray}`: `.pth`/`.pt` (needs torch, imported only then),
`.safetensors` (needs safetensors) or `.npz`."""
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxcd import storage
from jaxcd.errors import DataError, one_line


def _to_numpy(key: str, value: Any, path: Path) -> np.ndarray:
  import torch
  if not isinstance(value, torch.Tensor):
    raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
  value = value.detach().cpu()
  if value.is_floating_point():
    value = value.float()  # numpy has no bfloat16
  return value.numpy()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  """Reads a state dict from `.pth`/`.pt` (needs torch), `.safetensors` or `.npz` as numpy arrays;
  a gs:// file is read from its local copy."""
  path = Path(storage.local_copy(path, "weight file"))
  if not path.is_file():
    raise DataError(f"{path}: checkpoint file not found")
  suffix = path.suffix.lower()
  if suffix in (".pth", ".pt"):
    try:
      import torch
    except ImportError:
      raise DataError(f"{path}: reading a .pth checkpoint needs PyTorch: "
                      "pip install 'jaxcd[torch]'") from None
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
      raise DataError(f"{path}: not a readable PyTorch checkpoint: {one_line(e)[:300]}") from None
    # Common wrappings: {'state_dict': ..., 'epoch': ...}; the BIT_CD-family trainers (VcT's)
    # save {'model_G_state_dict': ..., 'optimizer_G_state_dict': ..., 'epoch_id': ...}.
    for wrapper in ("state_dict", "model_G_state_dict"):
      if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
        obj = obj[wrapper]
        break
    if not isinstance(obj, Mapping):
      raise DataError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {k: _to_numpy(k, v, path) for k, v in obj.items()}
  if suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise DataError(f"{path}: reading .safetensors needs safetensors: "
                      "pip install 'jaxcd[torch]'") from None
    try:
      return dict(load_file(str(path)))
    except Exception as e:
      raise DataError(f"{path}: not a readable safetensors file: {one_line(e)[:300]}") from None
  if suffix == ".npz":
    try:
      with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
    except Exception as e:
      raise DataError(f"{path}: not a readable .npz file: {one_line(e)[:300]}") from None
  raise DataError(f"{path}: unknown checkpoint format {suffix!r}; use .pth, .safetensors or .npz")
