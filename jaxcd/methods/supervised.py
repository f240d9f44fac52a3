"""Supervised training of any registered network: cross-entropy (or `config.loss.name`) on the
labeled training split, `config.num_steps` steps; the loop (`jaxcd.trainer`) does the rest."""
from jaxcd.methods import base


class Supervised(base.Method):
  name = "supervised"


METHOD = Supervised
