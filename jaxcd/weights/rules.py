"""The table machinery shared by every network: a rule maps one PyTorch state-dict key to a
(collection, path, transform) in the Flax variables; `_apply_rules` applies a table strictly.

Layouts: conv OIHW -> HWIO, Linear (out, in) -> (in, out), LayerNorm (C, H, W) -> (H, W, C),
BatchNorm running statistics -> the `batch_stats` collection.
"""
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcd.errors import DataError

Variables = dict[str, Any]
_Rule = tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]  # collection, path, transform

_same = lambda w: w
_conv = lambda w: np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO
_linear = lambda w: np.transpose(w)  # (out, in) -> (in, out)
_chw = lambda w: np.transpose(w, (1, 2, 0))  # (C, H, W) -> (H, W, C)


def _is_dropped(key: str) -> bool:
  return key.endswith("num_batches_tracked")  # a training counter; Flax BatchNorm has none


def _apply_rules(state_dict: Mapping[str, Any], rules: Mapping[str, _Rule], expected: Variables,
                 source: str, what: str, ignore: Callable[[str], bool]) -> Variables:
  unknown = sorted(k for k in state_dict if k not in rules and not ignore(k))
  if unknown:
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    raise DataError(f"{source}: unexpected key {unknown[0]!r}{more} for {what}")
  missing = [k for k in rules if k not in state_dict]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise DataError(f"{source}: missing key {missing[0]!r}{more} for {what}")
  out: Variables = {}
  for key, (collection, path, transform) in rules.items():
    value = transform(np.asarray(state_dict[key], np.float32))
    want = expected[collection]
    for p in path:
      want = want[p]
    if tuple(value.shape) != tuple(want.shape):
      raise DataError(f"{source}: {key!r} has shape {tuple(np.shape(state_dict[key]))}, which does "
                      f"not fit {what} ({'/'.join((collection,) + path)} wants {tuple(want.shape)})")
    node = out.setdefault(collection, {})
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  return out


def _shape_tree(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32), tree)


def _check_fits(new: Any, old: Any, source: str, what: str) -> None:
  new_leaves = jax.tree_util.tree_leaves_with_path(new)
  old_leaves = dict(jax.tree_util.tree_leaves_with_path(old))
  for path, x in new_leaves:
    want = old_leaves.get(path)
    if want is None or np.shape(want) != np.shape(x):
      name = jax.tree_util.keystr(path)
      got = "nothing" if want is None else str(tuple(np.shape(want)))
      raise DataError(f"{source}: {what} {name} has shape {tuple(np.shape(x))} but the model has "
                      f"{got} (check config.data.num_bands and config.model)")
