"""The `cnn_fast` preset trained for real: its net, Adam with its betas and torch's one-cycle schedule, on
the toy set in-process (the run and its bound live in tests/training_outcomes.py)."""

from jaxmnist.configs import PRESETS
from tests import training_outcomes


def test_cnn_fast_with_torchs_one_cycle_finishes_and_learns(tmp_path):
  summary = training_outcomes.cnn_fast_tiny(tmp_path / "run")
  assert summary["status"] == "finished" and summary["epochs_completed"] == PRESETS["cnn_fast"].epochs
  config = summary["config"]
  assert (config["model"], config["optimizer"], config["schedule"]) == ("cnn_fast", "adam", "onecycle_torch")
  training_outcomes.assert_clears("cnn_fast_tiny", summary)
