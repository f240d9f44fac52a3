"""One error type for bad user input, so command lines can print it as one clear line."""


class JaxcdError(Exception):
  """Base class of errors caused by the user's input (files, configs), not by bugs."""


class DataError(JaxcdError, ValueError):
  """A data file or dataset layout is missing, corrupt or inconsistent. The message names it."""


class ConfigError(JaxcdError, ValueError):
  """A config field has an invalid value. The message names the field."""


class TrainingError(JaxcdError, RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); checkpoints already written stay valid."""


def one_line(msg: str) -> str:
  """Collapses a message to one line (errors from libraries sometimes span several)."""
  return " ".join(str(msg).split())
