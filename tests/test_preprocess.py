"""A person's picture of a digit into MNIST's layout: real MNIST digits rendered as pictures come back.

The yardstick is MNIST itself: 200 test digits drawn large, black on white, off centre, saved as PNG
and JPEG, must preprocess back into images that correlate with the originals and whose centres of
mass sit where MNIST's do. Bad pictures must raise a UserError that names the file.
Real MNIST comes from the session's `real_mnist` fixture (the offline PyPI copy, fetched once).
"""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxmnist import preprocess
from jaxmnist.errors import UserError
from tests import render_digits

NUM_DIGITS = 200


@pytest.fixture(scope="module")
def digits_Nx28x28(real_mnist):
  return real_mnist.test_images[:NUM_DIGITS, ..., 0]


def shift_tolerant_correlation(a, b):
  """The best correlation over shifts of up to one pixel: the shape, apart from where it was rounded to.

  MNIST placed each digit by rounding its centre of mass to a whole pixel; recomputed from a rendered
  copy, a centre near half a pixel can round the other way, which moves a thin digit by one pixel.
  """
  shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
  return max(render_digits.correlation(np.roll(a, shift, (0, 1)), b) for shift in shifts)


def centres_of_mass(images_NxHxW):
  return np.array([preprocess.centre_of_mass(image) for image in images_NxHxW])


def encode(image: Image.Image, image_format="PNG", **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **options)
  return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that declares width x height but carries almost no pixel data: a decompression bomb's header."""
  def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
  header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
          + chunk(b"IEND", b""))


def test_mnist_centres_of_mass_lie_within_half_a_pixel_of_14(digits_Nx28x28):
  # The statistic the preprocessing copies: MNIST rounded each digit's centre of mass to pixel (14, 14).
  centres = centres_of_mass(digits_Nx28x28)
  assert np.all(np.abs(centres - preprocess.CENTRE) <= 0.5 + 1e-6)
  np.testing.assert_allclose(centres.mean(0), preprocess.CENTRE, atol=0.05)


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_rendered_mnist_digits_preprocess_back_into_mnist(digits_Nx28x28, tmp_path, image_format):
  paths = render_digits.write_digits(digits_Nx28x28, tmp_path, image_format)
  out = preprocess.to_mnist_batch(paths)
  assert out.shape == (NUM_DIGITS, 28, 28, 1) and out.dtype == np.uint8
  out = out[..., 0]
  correlations = np.array([render_digits.correlation(a, b) for a, b in zip(out, digits_Nx28x28)])
  shape_correlations = np.array([shift_tolerant_correlation(a, b) for a, b in zip(out, digits_Nx28x28)])
  # Measured: mean 0.958 (PNG and JPEG); shift-tolerant mean 0.976, lowest 0.866.
  assert correlations.mean() > 0.93, correlations.mean()
  assert shape_correlations.mean() > 0.96 and shape_correlations.min() > 0.8, np.sort(shape_correlations)[:5]
  # Centred as MNIST is: within half a pixel of (14, 14) (a little more once rounded to uint8), and
  # within one pixel of where the original digit's centre is.
  centres, original_centres = centres_of_mass(out), centres_of_mass(digits_Nx28x28)
  assert np.all(np.abs(centres - preprocess.CENTRE) <= 0.55), centres
  np.testing.assert_allclose(centres.mean(0), original_centres.mean(0), atol=0.05)
  assert np.all(np.abs(centres - original_centres) <= 1.0)
  # MNIST's contrast: black paper, ink peaking at 255.
  assert np.all(out.reshape(NUM_DIGITS, -1).max(1) == 255)
  assert np.all(np.median(out.reshape(NUM_DIGITS, -1), 1) == 0)


def test_mnist_images_themselves_come_back_almost_unchanged(digits_Nx28x28):
  # White ink on black is MNIST's own convention: it must not be inverted, and scaling is a no-op.
  out = np.stack([preprocess.mnist_layout(image.astype(np.float32))[..., 0] for image in digits_Nx28x28])
  shape_correlations = [shift_tolerant_correlation(a, b) for a, b in zip(out, digits_Nx28x28)]
  assert np.mean(shape_correlations) > 0.99 and min(shape_correlations) > 0.85  # measured 0.999, 0.894


def test_white_on_black_is_not_inverted_and_matches_black_on_white(digits_Nx28x28):
  digit = digits_Nx28x28[0]
  page = render_digits.render_digit(digit, 10, (50, 30))
  black_on_white = preprocess.to_mnist(encode(page))
  white_on_black = preprocess.to_mnist(encode(Image.fromarray(255 - np.asarray(page))))
  assert np.abs(black_on_white.astype(int) - white_on_black).max() <= 1
  assert render_digits.correlation(white_on_black, digit) > 0.95


@pytest.mark.parametrize("stroke_shade", [0, 255])
def test_canvas_png_with_transparent_background(digits_Nx28x28, stroke_shade):
  # What a draw-a-digit page posts: strokes of one colour whose alpha is the ink, on transparency.
  digit = digits_Nx28x28[1]
  ink = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR))
  rgba = np.zeros((320, 300, 4), np.uint8)
  rgba[..., :3] = stroke_shade
  rgba[20:300, 10:290, 3] = ink
  out = preprocess.to_mnist(encode(Image.fromarray(rgba, "RGBA")))
  assert out.shape == (28, 28, 1) and out.dtype == np.uint8
  assert render_digits.correlation(out, digit) > 0.95


def test_photo_with_uneven_light_noise_and_colour(digits_Nx28x28, tmp_path):
  # A 1600x1200 photo: paper shaded from 235 to 150 across, yellowish, sensor noise, JPEG. The shading
  # is more than half the ink's contrast, so only a fitted paper surface keeps the box on the digit.
  rng = np.random.default_rng(0)
  scores = []
  for digit in digits_Nx28x28[:10]:
    height, width, side = 1200, 1600, 300
    rows, cols = np.mgrid[:height, :width]
    page = 235 - 85 * (cols / width + rows / height) / 2
    top, left = rng.integers(0, height - side), rng.integers(0, width - side)
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float64) / 255
    page[top:top + side, left:left + side] = page[top:top + side, left:left + side] * (1 - ink) + 50 * ink
    page += rng.normal(0, 6, page.shape)
    rgb = np.repeat(np.clip(page, 0, 255)[..., None], 3, -1) - [0, 0, 20]
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=85)
    scores.append(shift_tolerant_correlation(preprocess.to_mnist(path)[..., 0], digit))
  assert min(scores) > 0.85, scores  # measured: 0.93 or more on 40 such photos


def test_exif_orientation_is_applied(digits_Nx28x28):
  # A phone stores the sensor's pixels and an EXIF tag: 6 means "turn 90 degrees clockwise to view".
  digit = digits_Nx28x28[2]
  page = render_digits.render_digit(digit, 10, (40, 40))
  exif = Image.Exif()
  exif[0x0112] = 6
  stored = page.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise, as the sensor saw it
  out = preprocess.to_mnist(encode(stored, "JPEG", quality=90, exif=exif))
  assert shift_tolerant_correlation(out[..., 0], digit) > 0.95


def test_sixteen_bit_greyscale_png(digits_Nx28x28):
  digit = digits_Nx28x28[3]
  page = np.asarray(render_digits.render_digit(digit, 8, (10, 20)), np.uint16) * 257
  out = preprocess.to_mnist(encode(Image.fromarray(page)))
  assert shift_tolerant_correlation(out[..., 0], digit) > 0.95


def test_a_lopsided_digit_is_kept_whole_in_the_field():
  # All its mass at the far right of a 20-pixel-wide box: centring the mass would push ink out.
  lopsided = np.zeros((20, 20), np.float32)
  lopsided[:, 0] = 40
  lopsided[:, 17:] = 255
  out = preprocess.centre_in_field(lopsided)
  assert out.sum() == pytest.approx(np.round(lopsided).sum())


def test_batch_of_paths_and_bytes_and_an_empty_batch(digits_Nx28x28, tmp_path):
  pages = render_digits.render_digits(digits_Nx28x28[:2])
  path = tmp_path / "a.png"
  pages[0].save(path)
  batch = preprocess.to_mnist_batch([path, encode(pages[1])])
  assert batch.shape == (2, 28, 28, 1) and batch.dtype == np.uint8
  np.testing.assert_array_equal(batch[0], preprocess.to_mnist(str(path)))
  assert preprocess.to_mnist_batch([]).shape == (0, 28, 28, 1)


def _raises_naming(source, name_in_message, *, name=None, words=()):
  with pytest.raises(UserError) as caught:
    preprocess.to_mnist(source, name=name)
  message = str(caught.value)
  assert name_in_message in message, message
  assert "\n" not in message and caught.value.exit_code == 2
  for word in words:
    assert word in message, message
  return message


def test_a_text_file_named_png(tmp_path):
  path = tmp_path / "x.png"
  path.write_text("not a picture\n")
  _raises_naming(path, str(path), words=("not an image", "PNG"))


def test_a_missing_path_and_a_folder(tmp_path):
  _raises_naming(tmp_path / "missing.png", str(tmp_path / "missing.png"), words=("does not exist",))
  _raises_naming(tmp_path, str(tmp_path), words=("folder",))


def test_uploaded_bytes_that_are_no_image_are_called_the_uploaded_image():
  _raises_naming(b"<html>", "the uploaded image", words=("not an image",))
  _raises_naming(b"", "the uploaded image")
  _raises_naming(b"<html>", "canvas.png", name="canvas.png")


@pytest.mark.parametrize("shade", [255, 0, 128])
def test_a_blank_picture_has_no_ink(tmp_path, shade):
  path = tmp_path / "blank.png"
  Image.new("L", (300, 200), shade).save(path)
  _raises_naming(path, str(path), words=("no digit",))


def test_ink_too_faint_to_be_a_digit(tmp_path):
  # White paper with a smudge 10 levels darker, saved as JPEG: no digit, not a digit-shaped artefact.
  page = np.full((300, 300), 250, np.uint8)
  page[100:200, 120:140] = 240
  path = tmp_path / "faint.jpg"
  Image.fromarray(page).save(path, quality=85)
  _raises_naming(path, str(path), words=("no digit",))


@pytest.mark.parametrize("side", [7_000, 10_000, 20_000])
def test_an_enormous_image_is_refused_before_decoding(tmp_path, side):
  # 49 megapixels is over our limit only; 100 trips Pillow's warning and 400 its error first: all
  # three must read the same, from a header of a few hundred bytes and no large allocation.
  path = tmp_path / "huge.png"
  path.write_bytes(png_header_only(side, side))
  with warnings.catch_warnings(record=True) as warned:
    warnings.simplefilter("always")
    _raises_naming(path, str(path), words=("too large", "megapixels"))
  assert not warned, [str(warning.message) for warning in warned]  # Pillow's warning became the error


def test_a_large_png_is_reduced_and_still_reads(digits_Nx28x28, tmp_path):
  # 2400x2000 pixels: block-averaged to about 1024 a side before the rest, for speed.
  digit = digits_Nx28x28[4]
  path = tmp_path / "scan.png"
  render_digits.render_digit(digit, 60, (500, 200), canvas=(2400, 2000)).convert("RGBA").save(path)
  assert shift_tolerant_correlation(preprocess.to_mnist(path)[..., 0], digit) > 0.95


def test_a_truncated_png(digits_Nx28x28, tmp_path):
  data_bytes = encode(render_digits.render_digit(digits_Nx28x28[0], 10, (0, 0)))
  path = tmp_path / "cut.png"
  path.write_bytes(data_bytes[:len(data_bytes) // 2])
  _raises_naming(path, str(path), words=("damaged or truncated",))


@pytest.mark.parametrize("where", ["a stroke in the middle", "ink at the corners", "nothing", "everywhere"])
def test_the_3x3_mean_around_the_ink_is_the_whole_images_to_the_bit(where):
  # _box3 sums only around the nonzero pixels; the digit's box and peak must not move by one ulp for it.
  rng = np.random.default_rng(0)
  image = np.zeros((60, 80), np.float32)
  if where == "a stroke in the middle":
    image[20:40, 30:34] = rng.uniform(0, 255, (20, 4))
  elif where == "ink at the corners":
    image[0, 0], image[-1, -1], image[0, -2:] = 255, 17.5, rng.uniform(0, 255, 2)
  elif where == "everywhere":
    image = rng.uniform(0, 255, image.shape).astype(np.float32)
  padded = np.pad(image, 1)
  whole = sum(padded[dy:dy + 60, dx:dx + 80] for dy in range(3) for dx in range(3)) / 9
  mean3 = preprocess._box3(image)  # pylint: disable=protected-access
  assert mean3.dtype == whole.dtype and np.array_equal(mean3, whole)
