"""Shared command-line plumbing: config flag, one-line errors, logging of the process index."""
import json
import logging as logging_std
import os
import sys
from typing import Any, Callable

from absl import flags, logging
from ml_collections import config_flags

from jaxcd.errors import JaxcdError, one_line


class _QuietOrbax(logging_std.Filter):
  """Drops orbax's INFO chatter (dozens of lines per save/restore); its warnings still show."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


logging.get_absl_handler().addFilter(_QuietOrbax())


def define_config_flags(workdir_required: bool = False) -> None:
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics.jsonl, tb/); "
                      "default runs/<config name>.")
  flags.mark_flag_as_required("config")
  if workdir_required:
    flags.mark_flag_as_required("workdir")


def workdir_from_flags() -> str:
  f = flags.FLAGS
  if f.workdir:
    return f.workdir
  name = os.path.splitext(os.path.basename(f["config"].config_filename))[0]
  return os.path.join("runs", name)


def run_guarded(fn: Callable[[], Any]) -> Any:
  """Runs fn; a JaxcdError (bad input) becomes `error: <one line>` on stderr and exit code 2."""
  try:
    return fn()
  except JaxcdError as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)
  except FileNotFoundError as e:  # anything missing that a library reported before we could
    print(f"error: file not found: {e.filename or one_line(e)}", file=sys.stderr)
    sys.exit(2)


def print_json(obj: Any) -> None:
  print(json.dumps(obj), flush=True)


def log_process() -> None:
  import jax
  logging.info("process %d/%d, devices: %d local / %d global (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
