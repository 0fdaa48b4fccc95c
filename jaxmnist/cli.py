"""The `jaxmnist` command (also `python -m jaxmnist`): train a model, then evaluate, predict, export and serve it.

Synopsis:
  jaxmnist train --model=cnn                     # the same flags as python -m jaxmnist.train
  jaxmnist train --resume runs/cnn-20261127-120000
  jaxmnist evaluate runs/cnn-20261127-120000     # confusion.png, top_losses.png, evaluation.json
  jaxmnist predict runs/cnn-20261127-120000 my_digit.png another.jpg
  jaxmnist export runs/cnn-20261127-120000       # model.jaxexport: runs with jax alone
  jaxmnist serve runs/cnn-20261127-120000        # draw digits in the browser at http://127.0.0.1:8000/

This module only dispatches: the flags are in jaxmnist.flags, each subcommand in its own module, imported
when it runs. Nothing here loads jax, so `--help` and a mistyped flag or run directory answer at once.
"""

import argparse
import sys

from jaxmnist import errors, flags, runs

RUN_DIR_COMMANDS = ("evaluate", "predict", "export", "serve")


def dispatch(args: argparse.Namespace) -> None:
  if args.command in RUN_DIR_COMMANDS:
    runs.read_config(args.run_dir)  # a wrong directory fails here, before the command loads jax
  # Each branch imports its own command: `predict` does not pay for what `train` or `evaluate` import.
  # pylint: disable=g-import-not-at-top
  if args.command == "train":
    from jaxmnist import train as command
  elif args.command == "evaluate":
    from jaxmnist import evaluate as command
  elif args.command == "predict":
    from jaxmnist import predict as command
  elif args.command == "export":
    from jaxmnist import export as command
  elif args.command == "serve":
    from jaxmnist import serve as command
  (command.run if args.command == "train" else command.main)(args)


def main(argv=None, prog: str = "jaxmnist") -> None:
  argv = sys.argv[1:] if argv is None else argv
  errors.exit_with_message(lambda: dispatch(flags.build_parser(prog).parse_args(argv)))


if __name__ == "__main__":
  main()
