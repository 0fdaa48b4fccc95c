"""On-device data augmentation for training batches: random shifts and random affine warps.

Each function maps (key, inputs_BxHxWxC float32 in [0, 1]) to inputs of the same shape, drawing one
transformation per example. They run inside the jitted step, so no data leaves the device.
"""

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


def random_shift(key: jax.Array, inputs_BxHxWxC: jax.Array, max_shift: int = 2) -> jax.Array:
  """Translates each image by up to `max_shift` pixels in each direction, filling with black."""
  _, height, width, channels = inputs_BxHxWxC.shape
  m = max_shift
  padded = jnp.pad(inputs_BxHxWxC, ((0, 0), (m, m), (m, m), (0, 0)))
  offsets_Bx2 = jax.random.randint(key, (inputs_BxHxWxC.shape[0], 2), 0, 2 * m + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, offsets_Bx2)


def _affine_one(key, image_HxWxC, max_degrees, max_scale, max_shift):
  height, width, _ = image_HxWxC.shape
  k_angle, k_scale, k_shift = jax.random.split(key, 3)
  angle = jnp.deg2rad(jax.random.uniform(k_angle, (), minval=-max_degrees, maxval=max_degrees))
  scale = 1.0 + jax.random.uniform(k_scale, (), minval=-max_scale, maxval=max_scale)
  shift = jax.random.uniform(k_shift, (2,), minval=-max_shift, maxval=max_shift)
  # Inverse map: for each output pixel, where to sample the input (about the image centre).
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                            indexing="ij")
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


AUGMENTATIONS = {"none": None, "shift": random_shift, "affine": random_affine}
