"""Model registry.

Every network is a Flax Linen module called as
`model.apply(variables, a_BxHxWxC, b_BxHxWxC, train=bool)` on float inputs (already normalised),
returning a dict with at least 'logits' (BxHxWxK) and any deep-supervision outputs.
"""
from typing import Any

import flax.linen as nn

from jaxcd.models.registry import REGISTRY as _REGISTRY, register  # noqa: F401


def get_model(name: str, **kwargs: Any) -> nn.Module:
  _import_all()
  if name not in _REGISTRY:
    from jaxcd.errors import ConfigError
    raise ConfigError(f"config.model.name: unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name](**kwargs)


def list_models() -> list[str]:
  _import_all()
  return sorted(_REGISTRY)


def _import_all():
  # Imported lazily so `import jaxcd.models` stays cheap; network modules import only
  # `jaxcd.models.registry`, so there is no cycle.
  # Each network module registers itself on import; add new modules here.
  from jaxcd.models import fc_siam  # noqa: F401
  from jaxcd.models import dsfernet  # noqa: F401
  from jaxcd.models import cdcluster  # noqa: F401
  from jaxcd.models import fc_ef_res  # noqa: F401
  from jaxcd.models import bit  # noqa: F401
  from jaxcd.models import rcr  # noqa: F401
  from jaxcd.models import snunet  # noqa: F401
  from jaxcd.models import dsamnet  # noqa: F401
  from jaxcd.models import stanet  # noqa: F401
  from jaxcd.models import changeformer  # noqa: F401
  from jaxcd.models import vct  # noqa: F401
