"""The evaluation report's numbers against hand-computed cases, and its pictures by the files they leave."""

import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxmnist import configs, interpret, models, report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def read_png(path) -> np.ndarray:
  """The PNG's pixels as float RGB in [0, 1], after checking that it is one."""
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"), np.float64) / 255


def _assert_only(folder, name) -> None:
  # No temporary file left beside the PNG, and no figure left open in pyplot's registry.
  assert sorted(p.name for p in folder.iterdir()) == [name]
  pyplot = sys.modules.get("matplotlib.pyplot")
  assert pyplot is None or not pyplot.get_fignums()


def template_colours(pixels, fig) -> np.ndarray:
  """[C, 28, 28, 3]: the colour at the centre of each template pixel of a weight-templates PNG.

  `fig` is the Figure the PNG was saved from, or one built from the same arguments (the same layout):
  its first C axes are the panels, class by class.
  """
  fig.draw_without_rendering()  # lays the panels out as savefig does
  num_classes = len(fig.axes) - 1  # the last axes is the colour bar
  centres = (np.arange(28) + 0.5) / 28
  colours = np.zeros((num_classes, 28, 28, 3))
  for k, ax in enumerate(fig.axes[:num_classes]):
    box = ax.get_window_extent()  # display pixels, origin at the bottom left
    rows = (pixels.shape[0] - (box.y1 - centres * box.height)).astype(int)
    cols = (box.x0 + centres * box.width).astype(int)
    colours[k] = pixels[rows[:, None], cols[None, :]]
  return colours


def template_signs(pixels, fig) -> np.ndarray:
  """[C, 28, 28]: +1 where a template pixel is shown red (a positive weight), -1 where blue, 0 where neither."""
  colours = template_colours(pixels, fig)
  return np.sign(np.round(colours[..., 0] - colours[..., 2], 3))


# matplotlib's first two colours of its default cycle (the train and the validation curve), and "gray".
TRAIN_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255
VALID_ORANGE = np.array([0xFF, 0x7F, 0x0E]) / 255
POST_GRAY = np.array([0x80, 0x80, 0x80]) / 255


def _near(pixels, colour, tolerance=0.12) -> np.ndarray:
  return np.abs(pixels - colour).max(-1) < tolerance


def assert_accuracy_picture(path, rows, post) -> None:
  """The accuracy.png at `path` shows `rows` (metrics.csv's) as report.accuracy_figure draws them: the train
  curve blue and the validation curve orange at each epoch's accuracy and between epochs, and the post's
  dashed line at `post.valid`, or, for `post=None`, no such line at all.

  The places come from a figure built from the same rows (the title only takes a line's height).
  """
  pixels = read_png(path)
  assert pixels.shape == (450, 700, 3)
  fig = report.accuracy_figure(rows, "a title", post)
  fig.draw_without_rendering()  # lays the figure out as savefig does
  ax = fig.axes[0]
  height = pixels.shape[0]

  def place(x, y):  # (row, column) in the PNG of the data point (epoch x, accuracy y)
    px, py = ax.transData.transform((x, y))
    return int(height - py), int(px)

  epochs = [r["epoch"] for r in rows]
  legend = ax.get_legend().get_window_extent().padded(4)
  gray = _near(pixels, POST_GRAY)
  gray[int(height - legend.y1):int(height - legend.y0), int(legend.x0):int(legend.x1)] = False  # its text
  box = ax.get_window_extent()
  top, left, right = int(height - box.y1) + 2, int(box.x0) + 2, int(box.x1) - 2
  gray = gray[top:int(height - box.y0) - 2, left:right]  # inside the axes
  if post is None:
    worst = gray.mean(axis=1).max()  # the most of one row's width that is gray
    assert worst < 0.05, f"a gray line runs across {worst:.2f} of the plot, but there is no post to compare with"
  else:
    row = place(epochs[0], post.valid)[0] - top
    dashes = gray[row - 1:row + 2].any(axis=0).mean()
    assert 0.4 < dashes < 0.9, f"the post's line at {post.valid} should be dashed gray: {dashes:.2f} of it is gray"

  curves = [("train_accuracy", TRAIN_BLUE)]
  if rows[0]["valid_accuracy"] is not None:
    curves.append(("valid_accuracy", VALID_ORANGE))
  else:
    assert not _near(pixels, VALID_ORANGE).any(), "no validation: no orange curve, nor its legend entry"
  for i, (name, colour) in enumerate(curves):
    values = [r[name] for r in rows]
    # Each epoch's point and three points between epochs: where the accuracy rises, the curve rises.
    xs = np.unique(np.concatenate([np.linspace(a, b, 5) for a, b in zip(epochs, epochs[1:])] or [epochs]))
    checked = 0
    for x in xs:
      y = np.interp(x, epochs, values)
      row, col = place(x, y)
      # Skip where a line drawn later (the validation curve over the train curve, the post's line over
      # both) passes within 4 pixels, and where the legend covers the curve.
      above = [np.interp(x, epochs, [r[other] for r in rows]) for other, _ in curves[i + 1:]]
      above += [post.valid] if post is not None else []
      if any(abs(place(x, a)[0] - row) <= 4 for a in above) or legend.contains(col, height - row):
        continue
      patch = pixels[row - 1:row + 2, col - 1:col + 2]
      assert _near(patch, colour).any(), f"{name} at epoch {x:.2f} ({y:.3f}): no curve at {row, col}"
      checked += 1
    assert checked >= min(len(xs), 2), f"{name}: too few points clear of the other lines to check"


def test_confusion_matrix_matches_hand_count():
  labels = np.array([0, 0, 1, 2, 2, 2], np.int32)
  predictions = np.array([0, 1, 1, 2, 0, 2])
  confusion = interpret.confusion_matrix(labels, predictions, num_classes=3)
  assert confusion.dtype == np.int64
  # Rows true, columns predicted: the 0 called 1 is at [0, 1], the 2 called 0 at [2, 0].
  np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_confusion_matrix_rejects_labels_out_of_range():
  with pytest.raises(ValueError, match="predictions must lie in"):
    interpret.confusion_matrix(np.array([0, 1]), np.array([0, 3]), num_classes=3)


def test_per_class_metrics_match_hand_computed_values():
  # Class 2 is never predicted (precision 0/0) and class 3 never occurs at all (everything 0/0).
  labels = np.array([0, 0, 1, 1, 2])
  predictions = np.array([0, 1, 1, 1, 0])
  confusion = interpret.confusion_matrix(labels, predictions, num_classes=4)
  metrics = interpret.per_class_metrics(confusion, ["zero", "one", "two", "three"])
  expected = [
      {"class": "zero", "support": 2, "precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2},
      {"class": "one", "support": 2, "precision": 2 / 3, "recall": 1.0, "f1": 0.8},
      {"class": "two", "support": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0},
      {"class": "three", "support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0},
  ]
  assert [row.keys() for row in metrics] == [row.keys() for row in expected]
  for row, want in zip(metrics, expected):
    assert row == pytest.approx(want)
  assert interpret.accuracy(confusion) == pytest.approx(3 / 5)


def test_metrics_table_lists_every_class_and_the_totals():
  confusion = interpret.confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), num_classes=3)
  table = interpret.metrics_table_markdown(interpret.per_class_metrics(confusion), interpret.accuracy(confusion))
  lines = table.splitlines()
  assert lines[0] == "| class | precision | recall | F1 | support |"
  assert "| 1 | 0.6667 | 1.0000 | 0.8000 | 2 |" in lines
  assert "| 2 | 0.0000 | 0.0000 | 0.0000 | 1 |" in lines
  assert lines[-2] == "| macro average | 0.3889 | 0.5000 | 0.4333 | 5 |"
  assert lines[-1] == "| accuracy | | | 0.6000 | |"


def test_top_losses_picks_the_confidently_wrong_examples():
  logits = np.array([
      [5.0, 0.0, 0.0],  # label 0: right and sure
      [4.0, 0.0, 0.0],  # label 1: wrong and sure
      [0.0, 0.0, 1.0],  # label 2: right
      [0.0, 2.0, 0.0],  # label 0: wrong, less sure
      [1000.0, 0.0, -1000.0],  # label 2: wrong beyond float32's exp: the log-softmax must stay finite
  ])
  labels = np.array([0, 1, 2, 0, 2], np.int32)
  top = interpret.top_losses(logits, labels, k=3)
  np.testing.assert_array_equal(top.indices, [4, 1, 3])
  np.testing.assert_allclose(top.losses, [2000.0, math.log(math.e**4 + 2), math.log(math.e**2 + 2)])
  np.testing.assert_array_equal(top.predicted, [0, 0, 1])
  np.testing.assert_allclose(top.probability,
                             [1.0, math.e**4 / (math.e**4 + 2), math.e**2 / (math.e**2 + 2)])
  assert len(interpret.top_losses(logits, labels, k=50).indices) == 5  # k beyond N: all, highest first


def test_confusion_text_is_dark_on_light_cells_and_light_on_dark():
  confusion = np.array([[50, 1], [0, 40]])
  fig = interpret.confusion_figure(confusion, ["a", "b"])
  colours = {text.get_text(): text.get_color() for text in fig.axes[0].texts}
  assert colours["50"] == "white" and colours["40"] == "white"  # dark blue cells
  assert colours["1"] == "black"


def test_plot_confusion_writes_a_png(tmp_path):
  rng = np.random.default_rng(0)
  confusion = interpret.confusion_matrix(rng.integers(0, 10, 500), rng.integers(0, 10, 500))
  path = tmp_path / "confusion.png"
  interpret.save_png(path, interpret.confusion_figure(confusion, FASHION, title="a test"))
  # (2.5 + 0.55 per class) inches high, 0.9 more wide for the colour bar, at 100 dpi.
  assert read_png(path).shape == (800, 890, 3)
  _assert_only(tmp_path, "confusion.png")


def test_plot_top_losses_writes_a_png(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (15, 28, 28, 1), dtype=np.uint8)
  labels, predicted = rng.integers(0, 10, 15), rng.integers(0, 10, 15)
  path = tmp_path / "top_losses.png"
  interpret.save_png(path, interpret.top_losses_figure(images, labels, predicted, rng.random(15), rng.random(15) * 5,
                                                       title="a test"))
  assert read_png(path).shape == (645, 850, 3)  # 3 rows of 5 panels: 1.7 x 1.95 inches each, +0.6 titles
  _assert_only(tmp_path, "top_losses.png")


def test_top_losses_titles_read_predicted_actual_probability():
  images = np.zeros((2, 28, 28, 1), np.uint8)
  fig = interpret.top_losses_figure(images, [2, 0], [7, 9], [0.98, 0.5], [4.2, 0.7], title="t")
  assert [ax.get_title() for ax in fig.axes] == ["7 / 2 / 0.98\nloss 4.20", "9 / 0 / 0.50\nloss 0.70"]
  long = interpret.top_losses_figure(images, [0, 9], [9, 0], [0.98, 0.5], [4.2, 0.7], FASHION, title="t")
  assert long.axes[0].get_title() == "Ankle boot /\nT-shirt/top / 0.98\nloss 4.20"


def test_weight_templates_undo_the_models_flattening():
  kernel = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)
  templates = interpret.weight_templates(kernel)
  # A single lit pixel at (row 3, column 20): the linear model's logits are that pixel's template values.
  image = np.zeros((1, 28, 28, 1), np.float32)
  image[0, 3, 20, 0] = 1.0
  variables = {"params": {"dense0": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(10)}}}
  logits = models.build_model("linear").apply(variables, jnp.asarray(image))
  np.testing.assert_allclose(logits[0], templates[:, 3, 20], rtol=1e-6)


def test_weight_template_panel_k_shows_the_pattern_of_class_k(tmp_path):
  # Class k: a positive band on rows 2k+4, 2k+5, left half only; negative everywhere else.
  templates = np.full((10, 28, 28), -0.5, np.float32)
  for k in range(10):
    templates[k, 2 * k + 4:2 * k + 6, 2:12] = 1.0
  kernel = templates.reshape(10, 784).T
  fig = interpret.weight_templates_figure(kernel)
  path = tmp_path / "weights.png"
  interpret.save_png(path, fig)
  pixels = read_png(path)
  assert pixels.shape == (450, 990, 3)  # 2 rows of 5 panels, 1.8 x 2.0 inches each, + colour bar, title
  colours = template_colours(pixels, fig)
  for k in range(10):
    band, outside = colours[k, 2 * k + 4, 6], colours[k, 2 * k + 4, 20]
    assert band[0] > band[2] + 0.2, f"panel {k}: the band should be red (positive), got {band}"
    assert outside[2] > outside[0] + 0.2, f"panel {k}: beside the band should be blue (negative), got {outside}"
    # And nothing else of panel k is red: the band of another class is not here.
    other = colours[k, 2 * ((k + 1) % 10) + 4, 6]
    assert other[2] > other[0]
  np.testing.assert_array_equal(template_signs(pixels, fig), np.sign(templates))
  _assert_only(tmp_path, "weights.png")


# ---- the accuracy curves of a run (jaxmnist/report.py) ---------------------------------------------------


RISING = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": a, "valid_accuracy": v, "seconds": 1.0}
          for e, a, v in ((1, 0.62, 0.80), (2, 0.81, 0.88), (3, 0.90, 0.93), (4, 0.95, 0.96))]


@pytest.mark.parametrize("post", [configs.POST_RESULTS["mlp3"], None], ids=["post preset", "no post"])
def test_accuracy_picture_shows_the_rising_curves_and_the_posts_line(tmp_path, post):
  path = tmp_path / "accuracy.png"
  report.plot_accuracy(path, RISING, "a test", post)
  assert_accuracy_picture(path, RISING, post)
  _assert_only(tmp_path, "accuracy.png")


def test_accuracy_picture_of_one_epoch_without_validation_shows_its_point(tmp_path):
  rows = [{**RISING[0], "valid_accuracy": None}]
  path = tmp_path / "accuracy.png"
  report.plot_accuracy(path, rows, "a test", configs.POST_RESULTS["linear"])
  assert_accuracy_picture(path, rows, configs.POST_RESULTS["linear"])


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
  def fail(*args):
    raise OSError("disk full")

  monkeypatch.setattr(report.os, "replace", fail)  # every picture is written through report.write_replacing
  with pytest.raises(OSError, match="disk full"):
    interpret.save_png(tmp_path / "confusion.png", interpret.confusion_figure(np.eye(3, dtype=np.int64)))
  assert not list(tmp_path.iterdir())
