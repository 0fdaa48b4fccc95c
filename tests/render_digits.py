"""Real MNIST digits rendered as a person's pictures: large, black ink on white, off centre, PNG or JPEG.

Synopsis:
  from tests import render_digits
  paths = render_digits.write_digits(mnist.test_images[:200], tmp_path, "png")
  digits = preprocess.to_mnist_batch(paths)   # should give the MNIST images back

Shared by the preprocessing tests and by tests that classify rendered digits with a trained model.
Each digit gets its own seeded scale (7x to 12x) and offset on a 400x360 canvas, so the margins are
uneven and the preprocessing has to find, scale and centre the digit itself.
"""

from pathlib import Path

import numpy as np
from PIL import Image

CANVAS = (400, 360)  # width, height: wider than tall, like a photo
SCALES = (7, 12)  # the digit's 28x28 field becomes 196..336 pixels a side
JPEG_QUALITY = 85


def render_digit(image_28x28: np.ndarray, scale: int, offset: tuple[int, int],
                 canvas: tuple[int, int] = CANVAS) -> Image.Image:
  """One MNIST image enlarged `scale` times (bilinear), as black ink on white at `offset` (x, y)."""
  field = Image.fromarray(np.asarray(image_28x28, np.uint8).reshape(28, 28), "L")
  big = field.resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
  page = Image.new("L", canvas, 255)
  page.paste(Image.fromarray(255 - np.asarray(big)), offset)
  return page


def random_placement(rng: np.random.Generator, canvas=CANVAS) -> tuple[int, tuple[int, int]]:
  """A scale and an offset that keep the enlarged 28x28 field inside the canvas."""
  scale = int(rng.integers(SCALES[0], SCALES[1] + 1))
  side = 28 * scale
  return scale, (int(rng.integers(0, canvas[0] - side + 1)), int(rng.integers(0, canvas[1] - side + 1)))


def render_digits(images_Nx28x28: np.ndarray, seed: int = 0) -> list[Image.Image]:
  """Every image rendered with its own seeded scale and offset."""
  rng = np.random.default_rng(seed)
  return [render_digit(image, *random_placement(rng)) for image in images_Nx28x28]


def write_digits(images_Nx28x28: np.ndarray, directory, image_format="png", seed=0) -> list[Path]:
  """Renders the images and saves them as digit-00000.png (or .jpg) files; returns their paths."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  suffix = {"png": "png", "jpeg": "jpg"}[image_format]
  options = {"quality": JPEG_QUALITY} if image_format == "jpeg" else {}
  paths = []
  for i, page in enumerate(render_digits(images_Nx28x28, seed)):
    path = directory / f"digit-{i:05d}.{suffix}"
    page.save(path, format=image_format.upper(), **options)
    paths.append(path)
  return paths


def correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation of two images' pixels: 1 when one is a brightened copy of the other."""
  a = np.asarray(a, np.float64).ravel() - np.mean(a)
  b = np.asarray(b, np.float64).ravel() - np.mean(b)
  return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
