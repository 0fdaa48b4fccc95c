"""What a classifier gets right and wrong, as numbers and pictures (fastai's ClassificationInterpretation).

Synopsis (numpy arrays in, numbers or figures out: the caller computes the logits):
  confusion_CxC = interpret.confusion_matrix(labels_N, logits_NxC.argmax(-1))
  print(interpret.metrics_table_markdown(interpret.per_class_metrics(confusion_CxC)))
  interpret.save_png(run_dir / "confusion.png", interpret.confusion_figure(confusion_CxC, title="cnn, test set"))
  top = interpret.top_losses(logits_NxC, labels_N, k=15)  # for top_losses_figure

Figures are `matplotlib.figure.Figure`s, not pyplot's, whose global registry of open figures would leak when a
plot raises; matplotlib is imported lazily (slow).
"""

import textwrap
from typing import NamedTuple, Sequence

import numpy as np

from jaxmnist import report
from jaxmnist.configs import IMAGE_SHAPE

DIGITS = tuple(str(d) for d in range(10))
DPI = 100  # the PNGs' pixels per inch: sizes in inches below times 100 are the sizes in pixels
MAX_COLUMNS = 5  # of the grids of panels


def _check_labels(name: str, values, num_classes: int) -> np.ndarray:
  values = np.asarray(values)
  if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f"{name} must be a flat [N] array of integers, got {values.dtype} {values.shape}")
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise ValueError(f"{name} must lie in [0, {num_classes}), got [{values.min()}, {values.max()}]")
  return values.astype(np.int64)


def confusion_matrix(labels_N, predictions_N, num_classes: int = 10) -> np.ndarray:
  """int64 [C, C] counts: row = true class, column = predicted class (sklearn's and fastai's layout)."""
  labels_N = _check_labels("labels", labels_N, num_classes)
  predictions_N = _check_labels("predictions", predictions_N, num_classes)
  if labels_N.shape != predictions_N.shape:
    raise ValueError(f"labels {labels_N.shape} and predictions {predictions_N.shape} differ in length")
  counts = np.bincount(labels_N * num_classes + predictions_N, minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float:
  # 0/0 (a class never predicted, or never present) is 0.0, sklearn's zero_division=0: JSON holds it, it never flatters.
  return float(numerator / denominator) if denominator else 0.0


def accuracy(confusion_CxC) -> float:
  """The fraction of all examples on the diagonal."""
  confusion_CxC = np.asarray(confusion_CxC)
  return _ratio(np.trace(confusion_CxC), confusion_CxC.sum())


def per_class_metrics(confusion_CxC, class_names: Sequence[str] | None = None) -> list[dict]:
  """Per class: name, support (true examples), precision, recall and F1, as plain Python numbers (see `_ratio`)."""
  confusion_CxC = np.asarray(confusion_CxC)
  names = _class_names(class_names, confusion_CxC.shape[0])
  rows = []
  for k, name in enumerate(names):
    correct, support, predicted = confusion_CxC[k, k], confusion_CxC[k].sum(), confusion_CxC[:, k].sum()
    precision, recall = _ratio(correct, predicted), _ratio(correct, support)
    rows.append({"class": name, "support": int(support), "precision": precision, "recall": recall,
                 "f1": _ratio(2 * precision * recall, precision + recall)})
  return rows


def metrics_table_markdown(metrics: list[dict], overall_accuracy: float | None = None) -> str:
  """A markdown table of `per_class_metrics`, a macro-average row, and the accuracy if given."""
  lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
  for row in metrics:
    lines.append(f"| {row['class']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
                 f"| {row['support']:,} |")
  # The macro average weighs every class alike, so a weak rare class shows; accuracy weighs examples.
  means = {key: np.mean([row[key] for row in metrics]) for key in ("precision", "recall", "f1")}
  lines.append(f"| macro average | {means['precision']:.4f} | {means['recall']:.4f} | {means['f1']:.4f} "
               f"| {sum(row['support'] for row in metrics):,} |")
  if overall_accuracy is not None:
    lines.append(f"| accuracy | | | {overall_accuracy:.4f} | |")
  return "\n".join(lines) + "\n"


class TopLosses(NamedTuple):
  """The k examples of highest loss, highest first; all arrays [k]."""

  indices: np.ndarray  # int64: positions in the arrays given to `top_losses`
  losses: np.ndarray  # float64: cross-entropy of the true label
  predicted: np.ndarray  # int64: argmax of the logits
  probability: np.ndarray  # float64: softmax probability of the predicted class


def top_losses(logits_NxC, labels_N, k: int) -> TopLosses:
  """The examples the model gets most confidently wrong: highest cross-entropy first, ties in order."""
  shifted_NxC = np.asarray(logits_NxC, np.float64)
  if shifted_NxC.ndim != 2:
    raise ValueError(f"logits must be [N, C], got shape {shifted_NxC.shape}")
  shifted_NxC = shifted_NxC - shifted_NxC.max(axis=-1, keepdims=True)  # so that exp never overflows
  log_probs_NxC = shifted_NxC - np.log(np.exp(shifted_NxC).sum(axis=-1, keepdims=True))
  labels_N = _check_labels("labels", labels_N, log_probs_NxC.shape[1])
  if labels_N.shape[0] != log_probs_NxC.shape[0]:
    raise ValueError(f"{labels_N.shape[0]} labels for {log_probs_NxC.shape[0]} rows of logits")
  losses_N = -np.take_along_axis(log_probs_NxC, labels_N[:, None], axis=1)[:, 0]
  indices = np.argsort(-losses_N, kind="stable")[:k]
  predicted = log_probs_NxC[indices].argmax(axis=1)
  probability = np.exp(log_probs_NxC[indices, predicted])
  return TopLosses(indices.astype(np.int64), losses_N[indices], predicted.astype(np.int64), probability)


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
  names = [str(k) for k in range(num_classes)] if class_names is None else list(class_names)
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for {num_classes} classes")
  return names


def _new_figure(width: float, height: float):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (slow import, see docstring)
  # Whole pixels, a hair over: matplotlib < 3.11.1 truncates, so 1.95 * 3 + 0.6 inches (6.4499999...) gave 644 px.
  width, height = ((round(inches * DPI) + 1e-6) / DPI for inches in (width, height))
  # Constrained layout keeps titles, tick labels and colour bars from overlapping without tuning.
  return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(path, fig) -> None:
  """Writes `fig` to `path` atomically: a reader never sees half a file."""
  report.write_replacing(path, lambda partial: fig.savefig(partial, dpi=DPI, format="png"), suffix=".png")


def confusion_figure(confusion_CxC, class_names: Sequence[str] | None = None, title: str = "confusion matrix"):
  """A heatmap of the counts, each written in its cell; rows true, columns predicted."""
  confusion_CxC = np.asarray(confusion_CxC)
  num_classes = confusion_CxC.shape[0]
  names = _class_names(class_names, num_classes)
  size = 2.5 + 0.55 * num_classes  # inches: ~0.55 per cell holds a 4-digit count at the font below
  fig = _new_figure(size + 0.9, size)  # the extra width is the colour bar's
  ax = fig.add_subplot()
  image = ax.imshow(confusion_CxC, cmap="Blues", vmin=0, interpolation="nearest")
  fig.colorbar(image, ax=ax, shrink=0.8, label="examples")
  fontsize = 9 if num_classes <= 12 else 6
  for (row, col), count in np.ndenumerate(confusion_CxC):
    red, green, blue, _ = image.cmap(image.norm(count))
    # Zeros grey (the eye goes to the mistakes that happened); else by the cell's Rec. 601 luma, for any colormap.
    colour = "0.75" if count == 0 else "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
    ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=fontsize)
  long = max(map(len, names)) > 3
  # Long names (Fashion-MNIST's "T-shirt/top") slant on the x axis so that neighbours do not collide.
  ax.set_xticks(range(num_classes), names, rotation=40 if long else 0, ha="right" if long else "center",
                rotation_mode="anchor")
  ax.set_yticks(range(num_classes), names)
  ax.set(xlabel="predicted", ylabel="true", title=title)
  return fig


def _grid(count: int) -> tuple[int, int]:
  columns = max(1, min(count, MAX_COLUMNS))
  return -(-count // columns), columns


def _panel_title(predicted: str, actual: str, probability: float, loss: float) -> str:
  line = f"{predicted} / {actual} / {probability:.2f}"
  if len(line) > 22:  # about what a panel holds: long class names break after the prediction instead
    line = "\n".join([*textwrap.wrap(f"{predicted} /", 22), *textwrap.wrap(f"{actual} / {probability:.2f}", 22)])
  return f"{line}\nloss {loss:.2f}"


def top_losses_figure(images_NxHxWx1, labels_N, predicted_N, probabilities_N, losses_N,
                      class_names: Sequence[str] | None = None, title: str = "top losses"):
  """The images in a grid, each titled as fastai's plot_top_losses: predicted / actual / probability."""
  images = np.asarray(images_NxHxWx1)
  images = images[..., 0] if images.ndim == 4 else images  # one channel; [N, H, W] works too
  num_images = images.shape[0]
  if not len(labels_N) == len(predicted_N) == len(probabilities_N) == len(losses_N) == num_images:
    raise ValueError(f"{num_images} images need as many labels, predictions, probabilities and losses")
  names = list(DIGITS if class_names is None else class_names)
  rows, columns = _grid(num_images)
  long = max(map(len, names), default=0) > 7
  fig = _new_figure(1.7 * columns, (2.3 if long else 1.95) * rows + 0.6)
  fig.suptitle(f"{title}\npredicted / actual / probability of prediction, and loss", fontsize=11)
  # uint8 pixels keep their absolute scale (a faint digit stays faint); floats are shown as given.
  scale = {"vmin": 0, "vmax": 255} if images.dtype == np.uint8 else {}
  for i in range(num_images):
    ax = fig.add_subplot(rows, columns, i + 1)
    ax.imshow(images[i], cmap="gray", interpolation="nearest", **scale)
    ax.set_title(_panel_title(names[predicted_N[i]], names[labels_N[i]], probabilities_N[i], losses_N[i]),
                 fontsize=8 if long else 9)
    ax.set_axis_off()
  return fig


def weight_templates(kernel_DxC) -> np.ndarray:
  """[C, H, W]: column k of a linear model's kernel laid out as the image it is multiplied with (the models
  flatten images in row-major order, so a plain reshape undoes it)."""
  kernel_DxC, (height, width, _) = np.asarray(kernel_DxC), IMAGE_SHAPE
  if kernel_DxC.ndim != 2 or kernel_DxC.shape[0] != height * width:
    raise ValueError(f"a kernel of {height}*{width} rows is needed, got {kernel_DxC.shape}")
  return kernel_DxC.T.reshape(-1, height, width)


def weight_templates_figure(kernel_DxC, class_names: Sequence[str] | None = None,
                            title: str = "linear model: weight per pixel and class"):
  """One panel per class; red pixels raise the class's score, blue ones lower it, white is 0."""
  templates_CxHxW = weight_templates(kernel_DxC)
  names = _class_names(class_names, templates_CxHxW.shape[0])
  # One symmetric scale for all panels, so that colours compare across classes and 0 is white.
  vmax = float(np.abs(templates_CxHxW).max()) or 1.0
  rows, columns = _grid(len(names))
  fig = _new_figure(1.8 * columns + 0.9, 2.0 * rows + 0.5)
  fig.suptitle(title, fontsize=11)
  for k, name in enumerate(names):
    ax = fig.add_subplot(rows, columns, k + 1)
    image = ax.imshow(templates_CxHxW[k], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_title("\n".join(textwrap.wrap(name, 14)), fontsize=9)
    # A thin frame instead of axes: near-zero weights are white, and the panel's edge would vanish.
    ax.set(xticks=[], yticks=[])
    for spine in ax.spines.values():
      spine.set_color("0.7")
  fig.colorbar(image, ax=fig.axes, shrink=0.8, label="weight")  # one bar beside all the panels
  return fig
