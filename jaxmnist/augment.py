"""On-device data augmentation for training batches: random shifts, affine warps, flips and erasing.

Synopsis:
  augment_fn = augment.build_augment("flip+shift+erase")   # config.augment; None for "none"
  inputs_BxHxWxC = augment_fn(key, inputs_BxHxWxC)

Each function maps (key, inputs_BxHxWxC float32 in [0, 1]) to inputs of the same shape, drawing one
transformation per example. They run inside the jitted step, so no data leaves the device.
"""

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from jaxmnist.steps import AugmentFn


def random_shift(key: jax.Array, inputs_BxHxWxC: jax.Array, max_shift: int = 2) -> jax.Array:
  """Translates each image by up to `max_shift` pixels in each direction, filling with black."""
  _, height, width, channels = inputs_BxHxWxC.shape
  m = max_shift
  padded = jnp.pad(inputs_BxHxWxC, ((0, 0), (m, m), (m, m), (0, 0)))
  offsets_Bx2 = jax.random.randint(key, (inputs_BxHxWxC.shape[0], 2), 0, 2 * m + 1)

  crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
  return jax.vmap(crop)(padded, offsets_Bx2)


def _affine_one(key, image_HxWxC, max_degrees, max_scale, max_shift):
  height, width, _ = image_HxWxC.shape
  k_angle, k_scale, k_shift = jax.random.split(key, 3)
  angle = jnp.deg2rad(jax.random.uniform(k_angle, (), minval=-max_degrees, maxval=max_degrees))
  scale = 1.0 + jax.random.uniform(k_scale, (), minval=-max_scale, maxval=max_scale)
  shift = jax.random.uniform(k_shift, (2,), minval=-max_shift, maxval=max_shift)
  # Inverse map: for each output pixel, where to sample the input (about the image centre).
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")
  centre_r, centre_c = (height - 1) / 2, (width - 1) / 2
  r, c = rows - centre_r - shift[0], cols - centre_c - shift[1]
  cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
  source = jnp.stack([cos * r - sin * c + centre_r, sin * r + cos * c + centre_c])
  warp = lambda channel: ndimage.map_coordinates(channel, list(source), order=1, mode="constant")
  return jax.vmap(warp, in_axes=2, out_axes=2)(image_HxWxC)


def random_affine(key: jax.Array, inputs_BxHxWxC: jax.Array, max_degrees: float = 10.0,
                  max_scale: float = 0.1, max_shift: float = 2.0) -> jax.Array:
  """Rotates (up to +-10 degrees), scales (up to +-10%) and shifts (up to +-2 px) each image, bilinear."""
  keys = jax.random.split(key, inputs_BxHxWxC.shape[0])
  return jax.vmap(lambda k, x: _affine_one(k, x, max_degrees, max_scale, max_shift))(keys, inputs_BxHxWxC)


def random_flip(key: jax.Array, inputs_BxHxWxC: jax.Array, prob: float = 0.5) -> jax.Array:
  """Mirrors each image left-right with probability `prob` (clothes are symmetric that way; digits are not)."""
  chosen_B = jax.random.bernoulli(key, prob, (inputs_BxHxWxC.shape[0],))
  return jnp.where(chosen_B[:, None, None, None], inputs_BxHxWxC[:, :, ::-1, :], inputs_BxHxWxC)


def _erase_one(key, image_HxWxC, prob, min_area, max_area, min_aspect, attempts):
  height, width, _ = image_HxWxC.shape
  k_apply, k_area, k_aspect, k_top, k_left, k_fill = jax.random.split(key, 6)
  # Zhong et al. redraw until the rectangle fits; static shapes cannot loop, so draw `attempts` candidates
  # at once and keep the first that fits (torchvision tries 10 times too). The aspect ratio is drawn
  # log-uniformly, so tall and wide rectangles are equally likely.
  area_A = jax.random.uniform(k_area, (attempts,), minval=min_area, maxval=max_area) * height * width
  aspect_A = jnp.exp(jax.random.uniform(k_aspect, (attempts,), minval=jnp.log(min_aspect), maxval=-jnp.log(min_aspect)))
  h_A = jnp.round(jnp.sqrt(area_A * aspect_A)).astype(jnp.int32)
  w_A = jnp.round(jnp.sqrt(area_A / aspect_A)).astype(jnp.int32)
  # Rounding can leave [min_area, max_area]: such a candidate does not fit either, so the bounds hold exactly.
  pixels_A = h_A * w_A
  fits_A = ((h_A >= 1) & (h_A <= height) & (w_A >= 1) & (w_A <= width)
            & (pixels_A >= min_area * height * width) & (pixels_A <= max_area * height * width))
  first = jnp.argmax(fits_A)
  h, w = h_A[first], w_A[first]
  top = jax.random.randint(k_top, (), 0, height - h + 1)
  left = jax.random.randint(k_left, (), 0, width - w + 1)
  rows, cols = (jax.lax.broadcasted_iota(jnp.int32, image_HxWxC.shape, axis) for axis in (0, 1))
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  erase = jax.random.bernoulli(k_apply, prob) & fits_A[first]
  # Noise (the paper's default, used for its Fashion-MNIST results), not 0: on a black background a black
  # rectangle hides nothing, or cuts a hole the net may read as a shape (a shirt less a sleeve is a top).
  fill = jax.random.uniform(k_fill, image_HxWxC.shape, image_HxWxC.dtype)
  return jnp.where(inside & erase, fill, image_HxWxC)


def random_erase(key: jax.Array, inputs_BxHxWxC: jax.Array, prob: float = 0.5, min_area: float = 0.02,
                 max_area: float = 0.4, min_aspect: float = 0.3, attempts: int = 10) -> jax.Array:
  """Random Erasing (Zhong et al., 2017; the paper's defaults): with probability `prob`, one rectangle of each
  image, covering [min_area, max_area] of it, height/width in [min_aspect, 1 / min_aspect], filled with noise."""
  keys = jax.random.split(key, inputs_BxHxWxC.shape[0])
  one = lambda k, x: _erase_one(k, x, prob, min_area, max_area, min_aspect, attempts)
  return jax.vmap(one)(keys, inputs_BxHxWxC)


# The base augmentations; config.augment names one, or several joined by "+" (build_augment).
AUGMENTATIONS = {"none": None, "shift": random_shift, "affine": random_affine, "flip": random_flip,
                 "erase": random_erase}


def build_augment(spec: str) -> AugmentFn | None:
  """The augmentation `spec` names (a config's `augment`, checked by configs.config_problems); None for "none".
  "flip+shift+erase" applies the parts in that order, each with its own key split from the step's; a single
  name gets the step's key itself, so "shift" and "affine" draw what they drew before composition existed."""
  parts = [AUGMENTATIONS[name] for name in spec.split("+")]
  if len(parts) == 1:
    return parts[0]

  def composed(key: jax.Array, inputs_BxHxWxC: jax.Array) -> jax.Array:
    for part, part_key in zip(parts, jax.random.split(key, len(parts))):
      inputs_BxHxWxC = part(part_key, inputs_BxHxWxC)
    return inputs_BxHxWxC

  return composed
