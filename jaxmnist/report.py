"""What a run leaves behind: config.json, metrics.csv, accuracy.png, summary.json, and console lines. Every file
is written to a temporary name and renamed, so an interrupted run never leaves half a file.
"""

import csv
import datetime
import io
import json
import os
from pathlib import Path

import numpy as np

from jaxmnist.configs import PostResult, config_to_dict

METRIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "valid_accuracy", "seconds")
# Many members' metrics.csv: a line per member per epoch (the epoch's seconds are the members' together), with
# the member's label (configs.member_labels: its index, seed and swept values) before these.
MEMBER_METRICS = ("train_loss", "train_accuracy", "valid_accuracy")


def epoch_row(epoch: int, sums: dict, valid_correct, num_valid: int, seconds: float, labels=()) -> dict:
  """metrics.csv's row of an epoch, from the epoch's sums on the host. Many members' row holds their means,
  and under "members" each one's label (configs.member_labels) and own metrics."""
  if labels:
    own = [epoch_row(epoch, {name: sum_[k] for name, sum_ in sums.items()}, valid_correct[k] if num_valid else None,
                     num_valid, seconds) for k in range(len(labels))]
    members = [{**label, **{name: row[name] for name in MEMBER_METRICS}} for label, row in zip(labels, own)]
    def mean(name):
      return None if num_valid == 0 and name == "valid_accuracy" else float(np.mean([m[name] for m in members]))
    return {"epoch": epoch, **{name: mean(name) for name in MEMBER_METRICS}, "seconds": round(seconds, 4),
            "members": members}
  return {"epoch": epoch, "train_loss": float(sums["loss_sum"]) / float(sums["count"]),
          "train_accuracy": float(sums["correct"]) / float(sums["count"]),
          "valid_accuracy": int(valid_correct) / num_valid if num_valid else None,  # None: --valid-fraction=0
          "seconds": round(seconds, 4)}


def best_member(members: list[dict]) -> int:
  """The member of the highest validation accuracy (the first of a tie): a sweep's choice, never by test."""
  return max(range(len(members)), key=lambda k: (members[k]["valid_accuracy"], -k))


def test_accuracies(rows: list, member_correct, ensemble_correct, num_test: int, sweep: bool = False) -> dict:
  """summary.json's test accuracy; an ensemble's also each member's, their mean and sample std. An ensemble has
  no validation split of its own (each member holds out one the others trained on): valid_accuracy is the mean.
  A sweep's are those of its best member by validation (its members trained with other values are no ensemble)."""
  if ensemble_correct is None and not sweep:
    return {"test_accuracy": int(member_correct) / num_test}
  members = [{**m, "test_accuracy": int(correct) / num_test}
             for m, correct in zip(rows[-1]["members"], member_correct)]
  if sweep:
    best = best_member(members)
    return {"members": members, "best_member": best, "valid_accuracy": members[best]["valid_accuracy"],
            "test_accuracy": members[best]["test_accuracy"]}
  def spread(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
  valid = [m["valid_accuracy"] for m in members if m["valid_accuracy"] is not None]
  return {"members": members, "member_test_accuracy": spread([m["test_accuracy"] for m in members]),
          "member_valid_accuracy": spread(valid) if valid else None,
          "ensemble_test_accuracy": ensemble_correct / num_test, "test_accuracy": ensemble_correct / num_test}


def finished_summary(config, rows: list, resumed_rows: list, train_seconds: float, mnist, data_info: dict,
                     test_accuracies_: dict, machine: dict) -> dict:
  """summary.json of a finished run: its config, accuracies, timings, data and the machine it ran on."""
  first_epoch = len(resumed_rows) + 1
  return {
      "status": "finished", "config": config_to_dict(config), "epochs_completed": config.epochs,
      "valid_accuracy": rows[-1]["valid_accuracy"], **test_accuracies_, "train_seconds": round(train_seconds, 3),
      # The first epoch of this process includes compilation.
      "first_epoch_seconds": rows[first_epoch - 1]["seconds"] if first_epoch <= len(rows) else None,
      "resumed_from_epoch": first_epoch - 1 if resumed_rows else None,
      "steady_epoch_seconds": round(float(np.median([r["seconds"] for r in rows[first_epoch:]]
                                                     or [rows[-1]["seconds"]])), 4),
      "dataset": config.dataset, "data_source": mnist.source, "data_verified": mnist.verified,
      "data_sha256": data_info["sha256"], **machine,
      "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
  }


def write_replacing(path, write, suffix: str = "") -> None:
  """Calls `write(partial)` for a temporary name beside `path`, then renames it to `path`: a reader never sees
  half a file, and a failed write (a full disk) leaves the older file in place and no partial one behind."""
  path = Path(path)
  partial = path.with_name(f".{path.name}.partial{suffix}")
  try:
    write(partial)
    os.replace(partial, path)
  finally:
    partial.unlink(missing_ok=True)  # only left after a failed write


def write_json(path: Path, obj) -> None:
  write_replacing(path, lambda partial: partial.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
  """A line per epoch; many members', a line per member of each epoch."""
  ensemble = bool(rows) and "members" in rows[0]
  buffer = io.StringIO()
  fields = ("epoch", *rows[0]["members"][0], "seconds") if ensemble else METRIC_FIELDS
  writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
  writer.writeheader()
  writer.writerows([{"epoch": row["epoch"], **member, "seconds": row["seconds"]} for row in rows
                    for member in row["members"]] if ensemble else rows)
  write_replacing(path, lambda partial: partial.write_text(buffer.getvalue()))


def read_metrics_csv(path: Path) -> list[dict]:
  """The lines as written (an ensemble's: one per member and epoch); an empty cell reads back as None."""
  with open(path, newline="") as f:
    return [{k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(f)]


def format_accuracy(accuracy: float | None) -> str:
  return "none (no validation split)" if accuracy is None else f"{accuracy:.4f}"


def accuracy_figure(rows: list[dict], title: str, post: PostResult | None):
  """Train and validation accuracy per epoch, with the post's final validation accuracy as a dashed line."""
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top  (slow import, kept off the start-up path)
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (no pyplot: no global figures)

  epochs = [r["epoch"] for r in rows]
  style = {"marker": "o"} if len(rows) == 1 else {}  # a line through one point draws nothing: dots
  fig = Figure(figsize=(7, 4.5), dpi=100, layout="tight")
  ax = fig.add_subplot()
  has_valid = bool(rows) and rows[0]["valid_accuracy"] is not None  # None: trained on all examples
  members = rows[0].get("members", ()) if rows else ()
  mean = f"mean of {len(members)} members, " if members else ""
  key, split, color = ("valid_accuracy", "validation", "tab:orange") if has_valid else ("train_accuracy", "train",
                                                                                       "tab:blue")
  swept = swept_fields(members)
  if swept:  # a line per value: means over members of other values would mean nothing
    _plot_sweep(ax, rows, epochs, key, split, swept, style)
  else:
    for k in range(len(members)):  # thin lines under the means: how far the seeds spread
      ax.plot(epochs, [r["members"][k][key] for r in rows], color=color, alpha=0.35,
              linewidth=0.8, label=f"each member's {split}" if k == 0 else None, **style)
    ax.plot(epochs, [r["train_accuracy"] for r in rows], color="tab:blue",
            label=f"train ({mean}running, during the epoch)", **style)
  if has_valid and not swept:
    ax.plot(epochs, [r["valid_accuracy"] for r in rows], color="tab:orange",
            label=f"validation ({mean}each on its own split)" if members else "validation", **style)
  if post is not None:
    ax.axhline(post.valid, color="gray", linestyle="--", label=f"post's validation ({post.valid})")
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  if len(rows) == 1:
    ax.set_xticks(epochs)  # the integer locator finds no integer in the padding around one epoch
  ax.set(xlabel="epoch", ylabel="accuracy", title=title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  return fig


def swept_fields(members: list[dict]) -> list[str]:
  """The swept fields a member's label names (configs.member_labels): [] for seeds alone or one model."""
  return [name for name in (members[0] if members else ())
          if name not in ("member", "seed", "test_accuracy", *MEMBER_METRICS)]


def _plot_sweep(ax, rows, epochs, key: str, split: str, swept, style) -> None:
  """A line per swept value: its seeds' mean, in a band from their lowest to their highest where there are seeds."""
  groups = {}
  for k, member in enumerate(rows[0]["members"]):
    groups.setdefault(", ".join(f"{name} {member[name]:g}" for name in swept), []).append(k)
  for label, ks in groups.items():
    values = np.array([[r["members"][k][key] for k in ks] for r in rows])  # [epochs, seeds]
    line, = ax.plot(epochs, values.mean(1), label=f"{split}, {label}" + (f" ({len(ks)} seeds)" if len(ks) > 1 else ""),
                    **style)
    if len(ks) > 1:
      ax.fill_between(epochs, values.min(1), values.max(1), color=line.get_color(), alpha=0.2)


def sweep_table(summary: dict, with_test: bool = False) -> list[str]:
  """A sweep's members sorted by validation accuracy, best first (never by test: `with_test` shows it beside)."""
  members, best = summary["members"], summary["best_member"]
  swept = swept_fields(members)
  lines = [f"sweep of {len(members)} x {summary['config']['model']} after {summary['epochs_completed']} epochs, "
           f"sorted by validation accuracy (the best, member {best}, is what predict, serve and export use):",
           "  member  seed  " + "  ".join(f"{name:>15}" for name in swept) + "  validation" + ("    test" if with_test
                                                                                                else "")]
  for m in sorted(members, key=lambda m: (-m["valid_accuracy"], m["member"])):
    test = f"  {m['test_accuracy']:.4f}" if with_test else ""
    lines.append(f"  {m['member']:>6}  {m['seed']:>4}  " + "  ".join(f"{m[name]:>15g}" for name in swept)
                 + f"      {m['valid_accuracy']:.4f}{test}" + ("   <- best" if m["member"] == best else ""))
  return lines


def plot_accuracy(path: Path, rows: list[dict], title: str, post: PostResult | None) -> None:
  """Writes accuracy_figure(rows, title, post) to `path` as a PNG, atomically."""
  fig = accuracy_figure(rows, title, post)
  write_replacing(path, lambda partial: fig.savefig(partial, dpi=100, format="png"), suffix=".png")


def _ensemble_lines(summary: dict, post: PostResult | None) -> list[str]:
  """An ensemble's members, their mean and std, and the ensemble."""
  members = summary["members"]
  lines = [f"{len(members)} x {summary['config']['model']} after {summary['epochs_completed']} epochs:"]
  lines += [f"  member {m['member']} (seed {m['seed']}): validation {format_accuracy(m['valid_accuracy'])}, "
            f"test {m['test_accuracy']:.4f}" for m in members]
  def spread(s):
    return f"{s['mean']:.4f} +- {s['std']:.4f}"
  valid = summary["member_valid_accuracy"]
  lines.append(f"  members' mean +- std: validation {spread(valid) if valid else format_accuracy(None)}, "
               f"test {spread(summary['member_test_accuracy'])}")
  lines.append(f"  ensemble of {len(members)} (mean of the members' probabilities): test accuracy "
               f"{summary['ensemble_test_accuracy']:.4f}")
  if post is not None:
    lines.append(f"  (post, PyTorch, one model, 400 epochs: validation {post.valid}, test {post.test})")
  return lines


def comparison_lines(summary: dict, post: PostResult | None) -> list[str]:
  """The closing lines: jaxmnist's accuracies beside the post's PyTorch numbers."""
  if "best_member" in summary:
    return sweep_table(summary)
  if "members" in summary:
    return _ensemble_lines(summary, post)
  valid, test = summary["valid_accuracy"], summary["test_accuracy"]
  lines = [f"{summary['config']['model']} after {summary['epochs_completed']} epochs:"]
  if post is None or valid is None:
    lines += [f"  validation accuracy {format_accuracy(valid)}", f"  test accuracy       {test:.4f}"]
  else:
    lines += [f"  validation accuracy {valid:.4f}   (post, PyTorch, 400 epochs: {post.valid})",
              f"  test accuracy       {test:.4f}   (post, PyTorch, 400 epochs: {post.test})"]
    lines += [f"  note: {post.note}"] if post.note else []
  return lines
