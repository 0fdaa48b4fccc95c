"""A person's own picture of one digit, made into MNIST's 28x28 uint8 input the way MNIST itself was made.

Synopsis (where `jaxmnist predict RUN_DIR a.png b.jpg` and the draw-a-digit page's POST /api/predict start):
  digit = preprocess.to_mnist("photo.jpg")                        # uint8 [28, 28, 1]
  digit = preprocess.to_mnist(png_bytes, name="the uploaded image")
  batch = preprocess.to_mnist_batch(["a.png", "b.jpg"])          # uint8 [N, 28, 28, 1]

MNIST's own recipe (docs/after-training.md): white ink on black, its bounding box scaled (antialiased) to a
longer side of 20 pixels, placed in 28x28 with its centre of mass on pixel (14, 14) by a whole-pixel shift.
"""

import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxmnist.configs import IMAGE_SHAPE
from jaxmnist.errors import UserError

FIELD = IMAGE_SHAPE[0]  # MNIST's image side
BOX = 20  # the side of the box that MNIST fits each digit into, keeping its aspect ratio
CENTRE = 14.0  # where MNIST puts the centre of mass (row, column), measured on its 10k test digits
MAX_PIXELS = 40_000_000  # refuse larger pictures before decoding them: a guard against decompression bombs
WORK_SIDE = 1024  # larger pictures are reduced to about this longer side (JPEGs while decoding)
INK_FRACTION = 0.25  # the digit's bounding box holds the pixels above this share of the ink's peak
NOISE_FRACTION = 0.1  # below this share, a pixel is paper, JPEG ringing or noise: it becomes 0
MIN_CONTRAST = 24  # ink fainter than this (of 255) above the paper means there is no digit to read
UPLOAD_NAME = "the uploaded image"

Source = str | os.PathLike | bytes | bytearray | memoryview


def to_mnist(source: Source, name: str | None = None) -> np.ndarray:
  """One picture of a digit (a path, or an encoded image's bytes) as uint8 [28, 28, 1]; `name` is what errors
  call it. UserError when the file is missing or unreadable, not an image, too large, or shows no ink."""
  name = name or (UPLOAD_NAME if isinstance(source, (bytes, bytearray, memoryview)) else str(source))
  return mnist_layout(read_grayscale(source, name), name)


def to_mnist_batch(sources: Sequence[Source]) -> np.ndarray:
  """to_mnist over several pictures, stacked into uint8 [N, 28, 28, 1]."""
  return np.stack([to_mnist(source) for source in sources]) if sources else np.zeros((0, *IMAGE_SHAPE), np.uint8)


# Step 1: decode, safely.

def read_grayscale(source: Source, name: str) -> np.ndarray:
  """Decodes a picture into float32 [H, W] in 0..255, upright, with any transparency flattened."""
  if isinstance(source, (bytes, bytearray, memoryview)):
    return _decode(io.BytesIO(bytes(source)), name)
  path = Path(source)
  if not path.is_file():
    what = "is a folder, not an image file" if path.is_dir() else "does not exist"
    raise UserError(f"Cannot read {name}: it {what}. Give the path of a PNG or JPEG picture of one digit.")
  try:
    with path.open("rb") as file:
      return _decode(file, name)
  except PermissionError as error:
    raise UserError(f"Cannot read {name}: {error.strerror}. Check the file's permissions.") from None


def _decode(file, name: str) -> np.ndarray:
  with warnings.catch_warnings():
    # Pillow's own bomb check (from about 89 megapixels) warns, then raises: both become our refusal.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
      with Image.open(file) as image:  # reads the header only: nothing is decoded yet
        _check_size(image.size, name)
        if image.format == "JPEG":  # big photos at 1/2..1/8 scale (longer side >= WORK_SIDE), straight to grey
          scale = min(1.0, WORK_SIDE / max(image.size))
          image.draft("L", (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        image.load()
        return _to_gray(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
      # Pillow refused in the header, before we saw the size: only its limit is known (warns at it, raises at 2x).
      limit = (Image.MAX_IMAGE_PIXELS or 0) * (2 if isinstance(error, Image.DecompressionBombError) else 1)
      raise _too_large(name, f"over {limit / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:
      raise UserError(f"{name} is not an image that can be read (PNG, JPEG, GIF, BMP, TIFF or WebP). Give a "
                      f"picture of one digit in one of those formats.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # what Pillow's decoders raise on bad data
      raise UserError(f"{name} could not be decoded ({error}): the file is damaged or truncated. "
                      f"Save the picture again as PNG or JPEG and retry.") from None


def _check_size(size: tuple[int, int], name: str) -> None:
  width, height = size
  if width * height > MAX_PIXELS:
    raise _too_large(name, f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels)")
  if width < 1 or height < 1:
    raise UserError(f"{name} has no pixels ({width}x{height}). Give a PNG or JPEG picture of one digit.")


def _too_large(name: str, size: str) -> UserError:
  return UserError(f"{name} is too large: {size}, more than the {MAX_PIXELS / 1e6:.0f} megapixels this reads "
                   f"(a guard against decompression bombs). A digit needs a few hundred pixels a side: shrink or "
                   f"crop the picture and retry.")


def _to_gray(image: Image.Image) -> np.ndarray:
  if image.mode in ("I", "F") or image.mode.startswith("I;"):  # 16-bit and float images
    image = image.convert("F")
  else:
    image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info else "L")
  factor = -(-max(image.size) // WORK_SIDE)
  if factor > 1:  # block means: a 20-pixel digit needs no more, and the later steps get cheap
    image = image.reduce(factor)
  if image.mode == "F":
    values = np.asarray(image, np.float32)
    return values * (255 / 65535) if values.max() > 255 else values  # 16-bit greyscale PNGs
  if image.mode == "L":
    return np.asarray(image, np.float32)
  return _flatten(np.asarray(image.convert("L"), np.float32), np.asarray(image.getchannel("A"), np.float32) / 255)


def _flatten(luma: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """Composites onto a backdrop that contrasts with the opaque pixels, so strokes of any shade stay ink: a
  canvas blob is transparent around its strokes, and white strokes flattened onto white would vanish."""
  if alpha.min() >= 1:
    return luma
  opaque_mean = float((luma * alpha).sum() / max(alpha.sum(), 1e-6))
  backdrop = 0.0 if opaque_mean > 127.5 else 255.0
  return luma * alpha + backdrop * (1 - alpha)


# Steps 2-5: MNIST's layout.

def mnist_layout(gray_HxW: np.ndarray, name: str = UPLOAD_NAME) -> np.ndarray:
  """Turns a greyscale picture of one digit (0..255, any polarity) into MNIST's uint8 [28, 28, 1]."""
  ink_HxW = ink_on_black(gray_HxW)
  mean3_HxW = _box3(ink_HxW)
  peak = float(mean3_HxW.max())  # a 3x3 mean, so that a lone hot pixel does not set the scale
  if peak < MIN_CONTRAST:
    raise UserError(f"{name} shows no digit: it is blank or nearly uniform (the darkest and lightest parts "
                    f"differ by {peak:.0f} of 255). Draw or photograph one digit with clear contrast, dark on "
                    f"light or light on dark, and retry.")
  rows, cols = ink_bounding_box(ink_HxW, mean3_HxW, INK_FRACTION * peak)
  # The faint edges inside the box stay: they are the antialiasing that MNIST's digits have too.
  digit = np.where(ink_HxW > NOISE_FRACTION * peak, ink_HxW, 0)[rows, cols]
  return centre_in_field(fit_in_box(digit))[..., None]


def ink_on_black(gray_HxW: np.ndarray) -> np.ndarray:
  """Makes the ink bright on a zero background, inverting light paper (MNIST is white on black)."""
  gray_HxW = np.asarray(gray_HxW, np.float32)
  # The median is paper: strokes cover far less than half of a picture of a digit.
  dark, paper, light = np.percentile(gray_HxW, [0.1, 50, 99.9])
  if paper > (dark + light) / 2:  # the paper is nearer the light end: dark ink on light paper
    gray_HxW, paper = 255 - gray_HxW, 255 - paper
  if np.count_nonzero(gray_HxW == paper) * 2 > gray_HxW.size:
    # A drawing (the page's canvas), not a photo: its paper is flat, so fitting a surface (most of the time) is moot.
    return np.maximum(gray_HxW - paper, 0)
  return np.maximum(gray_HxW - paper_surface(gray_HxW), 0)


def paper_surface(ink_HxW: np.ndarray, grid: int = 64, rounds: int = 4) -> np.ndarray:
  """A quadratic fitted to the paper (a photo's uneven light) on a grid of samples: from the darker half, then
  dropping every sample well above it (the ink). It follows a gradient or a vignette, never a stroke's shape."""
  height, width = ink_HxW.shape
  step = max(1, max(height, width) // grid)
  rows, cols = np.arange(0, height, step), np.arange(0, width, step)
  samples = ink_HxW[np.ix_(rows, cols)].ravel().astype(np.float64)
  y, x = np.meshgrid(rows / height - 0.5, cols / width - 0.5, indexing="ij")
  terms = np.stack([np.ones_like(y), y, x, y * y, x * y, x * x], -1).reshape(-1, 6)
  keep = samples <= np.median(samples)
  for _ in range(rounds):
    kept = terms[keep]  # normal equations: a 6x6 solve, far cheaper here than lstsq's SVD
    coefficients = np.linalg.solve(kept.T @ kept + 1e-9 * np.eye(6), kept.T @ samples[keep])
    residuals = samples - terms @ coefficients
    spread = max(1.4826 * float(np.median(np.abs(residuals[keep]))), 2.0)  # robust sigma, 2 levels at least
    keep = residuals < 3 * spread
  y, x = (np.arange(height) / height - 0.5)[:, None], (np.arange(width) / width - 0.5)[None, :]
  one, along_y, along_x, yy, xy, xx = coefficients
  return (one + along_y * y + along_x * x + yy * y * y + xy * x * y + xx * x * x).astype(np.float32)


def ink_bounding_box(ink_HxW: np.ndarray, mean3_HxW: np.ndarray, threshold: float) -> tuple[slice, slice]:
  """The rows and columns holding ink: pixels above threshold whose 3x3 mean (`mean3_HxW`) is too. Asking the
  neighbourhood ignores isolated specks (dust, sensor noise), yet keeps the box tight around strokes."""
  inked = (ink_HxW > threshold) & (mean3_HxW > threshold)
  if not inked.any():  # only isolated specks: fall back to every pixel above the threshold
    inked = ink_HxW > threshold
  row_indices, col_indices = np.nonzero(inked.any(1))[0], np.nonzero(inked.any(0))[0]
  return (slice(row_indices[0], row_indices[-1] + 1), slice(col_indices[0], col_indices[-1] + 1))


def fit_in_box(digit_HxW: np.ndarray, box: int = BOX) -> np.ndarray:
  """Scales the digit so its longer side is `box` pixels, keeping its aspect ratio, peak 255."""
  height, width = digit_HxW.shape
  scale = box / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  # LANCZOS on a float image: antialiased when shrinking, smooth when enlarging, no 8-bit rounding.
  image = Image.fromarray(digit_HxW.astype(np.float32), "F")
  resized = np.maximum(np.asarray(image.resize(size, Image.Resampling.LANCZOS)), 0)  # no negative lobes
  return resized * (255 / max(float(resized.max()), 1e-6))  # MNIST's digits peak at 254-255


def centre_in_field(digit_hxw: np.ndarray, field: int = FIELD, centre: float = CENTRE) -> np.ndarray:
  """Places the digit in a field x field image so that its centre of mass falls on pixel `centre`, by a
  whole-pixel shift as in MNIST, limited where a lopsided digit would leave the field so that no ink is cut."""
  height, width = digit_hxw.shape
  row_mass, col_mass = centre_of_mass(digit_hxw)
  top = int(np.clip(np.round(centre - row_mass), 0, field - height))
  left = int(np.clip(np.round(centre - col_mass), 0, field - width))
  out = np.zeros((field, field), np.float32)
  out[top:top + height, left:left + width] = digit_hxw
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def centre_of_mass(image_HxW: np.ndarray) -> tuple[float, float]:
  """The intensity-weighted mean (row, column); the centre of the image if it is all zero."""
  image_HxW = np.asarray(image_HxW, np.float64)
  total = image_HxW.sum()
  if total <= 0:
    return (image_HxW.shape[0] - 1) / 2, (image_HxW.shape[1] - 1) / 2
  return (float(np.arange(image_HxW.shape[0]) @ image_HxW.sum(1) / total),
          float(np.arange(image_HxW.shape[1]) @ image_HxW.sum(0) / total))


def _box3(image_HxW: np.ndarray) -> np.ndarray:
  """The 3x3 mean of each pixel (zero outside the image), computed only around the nonzero pixels (a drawing's
  ink covers little of its canvas) in one fixed order: the whole image's numbers, in a third of the time."""
  rows, cols = np.flatnonzero(image_HxW.any(1)), np.flatnonzero(image_HxW.any(0))
  mean3_HxW = np.zeros(image_HxW.shape, np.result_type(image_HxW.dtype, np.float32))
  if not rows.size:
    return mean3_HxW
  height, width = image_HxW.shape
  # A pixel of margin around the nonzero ones: every pixel whose neighbourhood holds any of them.
  around = (slice(max(rows[0] - 1, 0), min(rows[-1] + 2, height)), slice(max(cols[0] - 1, 0), min(cols[-1] + 2, width)))
  part = image_HxW[around]
  padded = np.pad(part, 1)
  part_height, part_width = part.shape
  total = padded[:part_height, :part_width].astype(mean3_HxW.dtype)
  for dy, dx in [(dy, dx) for dy in range(3) for dx in range(3)][1:]:
    total += padded[dy:dy + part_height, dx:dx + part_width]
  mean3_HxW[around] = total / 9
  return mean3_HxW
