"""`python -m jaxmnist`: the `jaxmnist` command, for environments where its console script is not on PATH.

Synopsis:
  python -m jaxmnist train --model=cnn
  python -m jaxmnist predict runs/cnn-20261127-120000 my_digit.png
"""

from jaxmnist import cli

cli.main(prog="python -m jaxmnist")
