"""python -m jaxcd.evaluate --config C --workdir W [--split test] [--checkpoint best|latest]

Metrics of a trained checkpoint on one split; prints them as a JSON last line.
"""
from absl import app, flags

from jaxcd import cli, parallel
from jaxcd.data import source_from_config
from jaxcd.methods import common


def evaluate_workdir(config, workdir: str, split: str, checkpoint: str = "best") -> dict:
  if config.method == "cdcluster":  # k cluster outputs -> change via the run's stored map
    from jaxcd.methods import cdcluster
    return cdcluster.evaluate_workdir(config, workdir, split, checkpoint)
  mesh = parallel.make_mesh()
  source = source_from_config(config.data, split)
  shape = common.sample_shape(source, config)
  model, state, _, step, which = common.restore_trained(
      config, workdir, shape, mesh, "best" if checkpoint == "best" else "checkpoints")
  normalize = common.make_normalizer(config)
  eval_step = common.make_eval_step(model, normalize, config.model.num_classes,
                                    config.loss.ignore_label, mesh)
  res = common.evaluate(eval_step, state.params, state.batch_stats, source, config, mesh, split)
  return {"split": split, "step": int(step), "checkpoint": which, "pairs": len(source), **res}


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
  app.run(main)
