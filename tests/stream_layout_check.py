"""Run by tests/test_parallel.py in a fresh process with 4 fake CPU devices: the collectives of
the compiled train step of each two-stream method given as arguments (RCR, AdvNet) on a 4-device
data-parallel mesh. Prints a JSON object: method -> collective -> {count, bytes}."""
import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402

from jaxcd import aot, config_base, parallel  # noqa: E402

CONFIGS = {"rcr": ("configs/rcr.py", {"width": 8}), "advnet": ("configs/advnet.py", {})}

out = {}
for name in sys.argv[1:]:
  path, kwargs = CONFIGS[name]
  config = aot.aot_config(config_base.load(path), size=32, model_kwargs=kwargs)
  ts = aot.train_step(config, parallel.make_mesh(jax.devices()), 8)
  hlo = ts.step.lower(ts.state, ts.batch).compile().as_text()
  out[name] = aot.collectives(hlo)
print(json.dumps(out))
