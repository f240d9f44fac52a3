"""python -m jaxcd.evaluate --config C --workdir W [--split test] [--checkpoint best|latest]

Metrics of a trained checkpoint on one split; prints them as a JSON last line. Pairs larger than
the evaluation window (`jaxcd.sliding.eval_window`: `input.eval_tile`, 256) are scored through
the sliding window of `jaxcd.predict`, so both give one change map for one pair.
"""
from absl import flags

from jaxcd import checkpointing, cli, parallel, sliding
from jaxcd.data import source_from_config
from jaxcd.methods import get_method
from jaxcd.state import sample_shape


def evaluate_workdir(config, workdir: str, split: str, checkpoint: str = "best") -> dict:
  """Metrics of `workdir`'s best (or latest) checkpoint on `split`, through the method's own
  change map (e.g. CDCluster's cluster-to-change map)."""
  method = get_method(config)
  source = source_from_config(config.data, split)
  shape = sample_shape(source, config)
  fixed = sliding.fixed_input_size(config)
  if fixed:  # its parameters are shaped by its input size, not by this split's images
    shape = (1, fixed, fixed, shape[-1])
  predictor = method.load_predictor(
      workdir, shape, checkpointing.BEST if checkpoint == "best" else checkpointing.LATEST)
  res = predictor.evaluate(source, split)
  return {"split": split, **predictor.info, "pairs": len(source), **res}


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  res = cli.run_guarded(lambda: (parallel.initialize_distributed(config.distributed),
                                 evaluate_workdir(config, f.workdir, f.split, f.checkpoint))[1])
  cli.print_json(res)


if __name__ == "__main__":
  # Flags are defined here, not at import, so library users can import evaluate_workdir.
  cli.define_config_flags(workdir_required=True)
  flags.DEFINE_string("split", "test", "Split to evaluate: train, val or test.")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to load.")
  cli.run_app(main)
