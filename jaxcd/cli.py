"""Shared command-line plumbing: config flag, one-line errors, logging of the process index."""
import difflib
import json
import logging as logging_std
import os
import sys
from typing import Any, Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcd.errors import JaxcdError, one_line


class _QuietOrbax(logging_std.Filter):
  """Drops orbax's INFO chatter (dozens of lines per save/restore); its warnings still show."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


logging.get_absl_handler().addFilter(_QuietOrbax())


def define_config_flag(help_string: str = "Config file (configs/*.py).") -> None:
  """The required --config flag. Its `--config.data.*` overrides are hidden from config_flags
  (which reads sys.argv itself) and applied by `parse_flags` instead."""
  config_flags.DEFINE_config_file("config", None, help_string, lock_config=True,
                                  sys_argv=_split_data_overrides(sys.argv)[0])
  flags.mark_flag_as_required("config")


def define_config_flags(workdir_required: bool = False) -> None:
  define_config_flag()
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics.jsonl, tb/); "
                      "default runs/<config name>.")
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


def run_app(main: Callable[[Sequence[str]], Any], compilation_cache: bool = True) -> None:
  """`app.run(main)` whose flag errors (a misspelled `--config.x.y`, a value of the wrong type,
  a missing config file) are one `error:` line and exit code 2, not a traceback. With
  `compilation_cache`, XLA's persistent cache is on first (`enable_compilation_cache`)."""
  if compilation_cache:
    enable_compilation_cache()
  app.run(main, flags_parser=parse_flags)


def enable_compilation_cache() -> str | None:
  """XLA's persistent compilation cache, so that a rerun, a resume or an evaluation of the same
  config loads its compiled steps instead of compiling them again (tens of seconds to minutes
  on CPU). Folder: $JAX_COMPILATION_CACHE_DIR if set, else $JAXCD_CACHE/xla (default
  ~/.cache/jaxcd/xla); JAXCD_COMPILATION_CACHE=0 turns it off. Call before the first compile.
  Returns the folder (None when off)."""
  import jax
  if os.environ.get("JAXCD_COMPILATION_CACHE", "1") == "0":
    return None
  folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
      os.environ.get("JAXCD_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxcd")),
      "xla")
  jax.config.update("jax_compilation_cache_dir", folder)
  return folder


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, except that `--config.data.*` overrides are applied by
  `config_base.override_data` (a new `name` brings its source's options; values are typed as
  declared); any error is one line."""
  from jaxcd import config_base
  try:
    rest, data = _split_data_overrides(argv)
    remaining = flags.FLAGS(rest)
    if "config" in flags.FLAGS:
      config = flags.FLAGS.config  # config_flags loads lazily: a bad file fails here, not later
      if config is not None:
        config.keys()
      if data:
        config_base.override_data(config, data)
    return remaining
  except JaxcdError as e:
    message = one_line(e)
  except Exception as e:  # noqa: BLE001 - config_flags raises KeyError/AttributeError too
    message = (_config_file_error(argv) or _config_override_error(argv) or
               one_line(e.args[0] if isinstance(e, KeyError) and e.args else e))
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _split_data_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  rest, data, args, i = [argv[0]], [], list(argv[1:]), 0
  while i < len(args):
    name, eq, value = args[i].partition("=")
    if name.startswith("--config.data.") and "." not in name[len("--config.data."):]:
      if not eq:
        value, i = (args[i + 1] if i + 1 < len(args) else ""), i + 1
      data.append((name[len("--config.data."):], value))
    else:
      rest.append(args[i])
    i += 1
  return rest, data


def _config_path(argv: Sequence[str]) -> str | None:
  args = list(argv[1:])
  for i, arg in enumerate(args):
    name, eq, value = arg.partition("=")
    if name == "--config":
      return value if eq else (args[i + 1] if i + 1 < len(args) else None)
  return None


def _config_file_error(argv: Sequence[str]) -> str | None:
  """A config file that is missing or does not load, with the cause."""
  path = _config_path(argv)
  if path is None:
    return None
  file = path.split(":", 1)[0]
  if not os.path.isfile(file):
    return f"--config {file}: no such config file"
  from jaxcd import config_base
  try:
    config_base.load(file, *path.split(":", 1)[1:])
  except Exception as e:  # noqa: BLE001 - whatever the config file raised is the message
    return f"--config {file}: cannot load it: {type(e).__name__}: {one_line(e)[:300]}"
  return None


def _config_override_error(argv: Sequence[str]) -> str | None:
  """The first `--config.a.b=v` naming no field of the config file, with the valid names."""
  path = _config_path(argv)
  overrides = [arg.partition("=")[0][len("--config."):] for arg in argv[1:]
               if arg.startswith("--config.")]
  if path is None or not overrides:
    return None
  from jaxcd import config_base
  try:
    file, *config_args = path.split(":", 1)
    config = config_base.load(file, *config_args)
  except Exception:  # noqa: BLE001 - the flag error itself is then the best message
    return None
  for field in overrides:
    node, parts = config, field.split(".")
    for depth, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        where = ".".join(["config", *parts[:depth]])
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"--config.{field}: {where} has no field {part!r}{hint}; its fields: "
                f"{', '.join(sorted(keys))}")
      node = node[part]
  return None


def print_json(obj: Any) -> None:
  print(json.dumps(obj), flush=True)


def log_process() -> None:
  import jax
  logging.info("process %d/%d, devices: %d local / %d global (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
