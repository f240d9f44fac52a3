"""python -m jaxcd.train --config configs/X.py [--workdir W] [--config.field=value ...]

Trains with the config's method; resumes automatically from W's latest checkpoint; prints the
final metrics of the best checkpoint as a JSON last line.
"""

from jaxcd import cli, parallel, trainer


def main(argv):
  del argv
  config = cli.flags.FLAGS.config
  workdir = cli.workdir_from_flags()

  def run():
    parallel.initialize_distributed(config.distributed)
    cli.log_process()
    return trainer.train_and_evaluate(config, workdir)

  final = cli.run_guarded(run)
  cli.print_json({"workdir": workdir, **{s: _summary(m) for s, m in (final or {}).items()}})


def _summary(m: dict) -> dict:
  keys = ("f1", "iou", "precision", "recall", "oa", "kappa")
  return {k: round(m[k], 4) for k in keys if k in m}


if __name__ == "__main__":
  cli.define_config_flags()  # here, not at import: importing jaxcd.train defines no flags
  cli.run_app(main)
