"""The `jaxmnist` command: train a model, then evaluate, predict with and export what it learned.

Synopsis:
  jaxmnist train --model=cnn                     # the same flags as python -m jaxmnist.train
  jaxmnist train --resume runs/cnn-20261127-120000
  jaxmnist evaluate runs/cnn-20261127-120000     # confusion.png, top_losses.png, evaluation.json
  jaxmnist predict runs/cnn-20261127-120000 my_digit.png another.jpg
  jaxmnist export runs/cnn-20261127-120000       # model.jaxexport: runs with jax alone
  jaxmnist serve runs/cnn-20261127-120000        # draw digits in the browser at http://127.0.0.1:8000/

Each subcommand lives in its own module; this one only parses flags and dispatches.
"""

import argparse
import sys

from jaxmnist import train


def _add_run_dir(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory that `jaxmnist train` wrote")


def build_parser() -> argparse.ArgumentParser:
  parser = train.ArgumentParser(prog="jaxmnist", description="Train, evaluate, use and export MNIST models.")
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=train.ArgumentParser)
  commands.required = True

  train.add_train_arguments(commands.add_parser("train", help="train a model (or --resume a run)"))

  evaluate = commands.add_parser("evaluate", help="write a run's evaluation report")
  _add_run_dir(evaluate)
  train.add_data_arguments(evaluate)

  predict = commands.add_parser("predict", help="classify images of your own (PNG, JPEG, ...)")
  _add_run_dir(predict)
  predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files, one digit each")
  predict.add_argument("--json", action="store_true", help="print machine-readable JSON")

  export = commands.add_parser("export", help="write the model as a jax.export artifact")
  _add_run_dir(export)
  export.add_argument("--out", help="where to write it (default RUN_DIR/model.jaxexport)")
  export.add_argument("--onnx", action="store_true", help="also write an ONNX model beside it (needs "
                      "pip install 'jaxmnist[onnx]')")

  serve = commands.add_parser("serve", help="a page to draw digits on, and the model reading them (needs "
                              "pip install 'jaxmnist[serve]')")
  _add_run_dir(serve)
  serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this "
                     "machine only; 0.0.0.0 lets others on the network in)")
  serve.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0: any free port)")
  return parser


def dispatch(args: argparse.Namespace) -> None:
  # Imports stay inside each branch: `predict` must not pay for what `train` or `evaluate` import.
  if args.command == "train":
    train.run(args)
  elif args.command == "evaluate":
    from jaxmnist import evaluate  # pylint: disable=g-import-not-at-top

    evaluate.main(args)
  elif args.command == "predict":
    from jaxmnist import predict  # pylint: disable=g-import-not-at-top

    predict.main(args)
  elif args.command == "export":
    from jaxmnist import export  # pylint: disable=g-import-not-at-top

    export.main(args)
  elif args.command == "serve":
    from jaxmnist import serve  # pylint: disable=g-import-not-at-top

    serve.main(args)


def main(argv=None) -> None:
  train.exit_with_message(lambda: dispatch(build_parser().parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
  main()
