"""`python -m jaxmnist train --model=cnn`: the `jaxmnist` command, where its console script is not on PATH."""

from jaxmnist import cli

cli.main(prog="python -m jaxmnist")
