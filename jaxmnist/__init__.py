"""jaxmnist: a purely functional JAX/Flax MNIST classifier that reproduces the fast.ai chapter 4 post.

Synopsis: python -m jaxmnist.train --model=mlp3
"""

__version__ = "0.1.0"
