"""What a run leaves behind: config.json, metrics.csv, accuracy.png, summary.json, and console lines.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file; metrics.csv is rewritten after each epoch and always holds the finished epochs.
"""

import csv
import io
import json
import os
import platform
from pathlib import Path

from jaxmnist.configs import PostResult

METRIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "valid_accuracy", "seconds")


def portable(text: str) -> str:
  """`text` with this machine's cache and home folders written as $JAXMNIST_CACHE_DIR and ~, for
  results that are committed and read elsewhere."""
  cache = os.environ.get("JAXMNIST_CACHE_DIR")
  if cache:
    text = text.replace(str(Path(cache).expanduser()), "$JAXMNIST_CACHE_DIR")
  return text.replace(str(Path.home()), "~")


def cpu_name() -> str:
  """The processor's model name (Linux), else the machine type: for the hardware line of results."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.machine()


def write_replacing(path, write, suffix: str = "") -> None:
  """Calls `write(partial)` for a temporary name beside `path`, then renames it to `path`.

  A reader never sees half a file, and a failed write (a full disk) leaves the older file in place
  and no partial one behind.
  """
  path = Path(path)
  partial = path.with_name(f".{path.name}.partial{suffix}")
  try:
    write(partial)
    os.replace(partial, path)
  finally:
    partial.unlink(missing_ok=True)  # only left after a failed write


def write_atomic(path: Path, text: str) -> None:
  write_replacing(path, lambda partial: partial.write_text(text))


def write_json(path: Path, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  write_atomic(path, buffer.getvalue())


def read_metrics_csv(path: Path) -> list[dict]:
  """The rows as written; an empty cell (no validation split) reads back as None."""
  with open(path, newline="") as f:
    return [{k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(f)]


def format_accuracy(accuracy: float | None) -> str:
  return "none (no validation split)" if accuracy is None else f"{accuracy:.4f}"


def accuracy_figure(rows: list[dict], title: str, post: PostResult | None):
  """Train and validation accuracy per epoch, with the post's final validation accuracy as a dashed line."""
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top  (slow import, kept off the start-up path)
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (no pyplot: no global figures)

  epochs = [r["epoch"] for r in rows]
  # A line through one point draws nothing: a one-epoch run shows its accuracies as dots.
  style = {"marker": "o"} if len(rows) == 1 else {}
  fig = Figure(figsize=(7, 4.5), dpi=100, layout="tight")
  ax = fig.add_subplot()
  ax.plot(epochs, [r["train_accuracy"] for r in rows], label="train (running, during the epoch)", **style)
  if rows and rows[0]["valid_accuracy"] is not None:  # None: trained on all examples
    ax.plot(epochs, [r["valid_accuracy"] for r in rows], label="validation", **style)
  if post is not None:
    ax.axhline(post.valid, color="gray", linestyle="--", label=f"post's validation ({post.valid})")
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  if len(rows) == 1:
    ax.set_xticks(epochs)  # the integer locator finds no integer in the padding around one epoch
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  return fig


def plot_accuracy(path: Path, rows: list[dict], title: str, post: PostResult | None) -> None:
  """Writes accuracy_figure(rows, title, post) to `path` as a PNG, atomically."""
  fig = accuracy_figure(rows, title, post)
  write_replacing(path, lambda partial: fig.savefig(partial, dpi=100, format="png"), suffix=".png")


def comparison_lines(summary: dict, post: PostResult | None) -> list[str]:
  """The closing lines: jaxmnist's accuracies beside the post's PyTorch numbers."""
  valid, test = summary["valid_accuracy"], summary["test_accuracy"]
  lines = [f"{summary['config']['model']} after {summary['epochs_completed']} epochs:"]
  if post is None or valid is None:
    lines += [f"  validation accuracy {format_accuracy(valid)}", f"  test accuracy       {test:.4f}"]
  else:
    lines += [
        f"  validation accuracy {valid:.4f}   (post, PyTorch, 400 epochs: {post.valid})",
        f"  test accuracy       {test:.4f}   (post, PyTorch, 400 epochs: {post.test})",
    ]
    if post.note:
      lines.append(f"  note: {post.note}")
  return lines
