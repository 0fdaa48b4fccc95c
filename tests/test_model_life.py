"""A trained model's life after training, on a real `cnn` run: the evaluation report, `jaxmnist evaluate`,
`jaxmnist predict` on digits rendered as a person's pictures, every bad image, and `jaxmnist export`
run in a fresh process that has only jax."""

import json

import numpy as np
import pytest

from jaxmnist import data, evaluate, train_state
from tests import agreement, training_outcomes
from tests.test_export import _run_in_fresh_python  # pylint: disable=protected-access

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def jaxmnist(jaxmnist_in_process, monkeypatch, real_cache_dir):
  """`jaxmnist ARGS` that must succeed, as jaxmnist_in_process runs it, reading real MNIST from the session's
  cache: what it printed. (No start-up and import of jax a command: that a process exits as main does is
  tests/test_cli.py's to show.)"""
  monkeypatch.setenv("JAXMNIST_CACHE_DIR", str(real_cache_dir))

  def call(*args):
    result = jaxmnist_in_process(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout
  return call


@pytest.fixture(scope="module")
def checkpoint_logits(cnn_run, real_mnist):
  """The trained model's eval-mode logits of the test set and of its validation split, in this process."""
  trained = train_state.load_trained(cnn_run[0])
  _, valid_indices = data.split_train_valid(len(real_mnist.train_labels), trained.config.valid_fraction,
                                            trained.config.seed)
  test_logits, valid_logits, _ = evaluate.split_logits(trained, real_mnist)
  return test_logits, valid_logits, valid_indices


def test_training_ends_with_the_evaluation_report(cnn_run, checkpoint_logits, real_mnist):
  run_dir, result = cnn_run
  summary = json.loads((run_dir / "summary.json").read_text())
  evaluation = json.loads((run_dir / "evaluation.json").read_text())
  training_outcomes.assert_clears("real_cnn", summary)  # the preset reaches ~0.991
  assert evaluation["test"]["num_examples"] == 10000 and evaluation["validation"]["num_examples"] == 12000
  # Training counted with its logits program on the devices' copy of the data, this process with the
  # restored model's: two compilations, which may disagree on a near tie, and must on nothing else.
  test_logits, valid_logits, valid_indices = checkpoint_logits
  for split, logits, labels in (("test", test_logits, real_mnist.test_labels),
                                ("valid", valid_logits, real_mnist.train_labels[valid_indices])):
    report_split = evaluation["test" if split == "test" else "validation"]
    for what, accuracy in ((f"summary.json's {split}_accuracy", summary[f"{split}_accuracy"]),
                           (f"evaluation.json's {split} accuracy", report_split["accuracy"])):
      agreement.assert_same_count(agreement.correct_count(accuracy, len(labels)), logits, labels, what)
  assert np.asarray(evaluation["test"]["confusion"]).sum() == 10000
  assert len(evaluation["test"]["per_class"]) == 10 and len(evaluation["top_losses"]) == evaluate.NUM_TOP_LOSSES
  assert all(t["predicted"] != t["label"] for t in evaluation["top_losses"])
  for name in ("confusion.png", "top_losses.png"):
    assert (run_dir / name).read_bytes()[:8] == PNG_SIGNATURE
  assert not (run_dir / "weights.png").exists()  # the linear model's picture only
  assert "| class | precision | recall |" in result.stdout


def test_evaluate_command_agrees_with_the_summary(cnn_run, checkpoint_logits, real_mnist, jaxmnist):
  run_dir, _ = cnn_run
  stdout = jaxmnist("evaluate", run_dir)
  summary = json.loads((run_dir / "summary.json").read_text())
  accuracy = json.loads((run_dir / "evaluation.json").read_text())["test"]["accuracy"]  # the command's
  agreement.assert_same_count(agreement.correct_count(accuracy, 10000), checkpoint_logits[0], real_mnist.test_labels,
                              "jaxmnist evaluate's test accuracy")
  # Training and evaluate count with the same compiled program on this machine (jaxmnist.programs): the same
  # count, and the command says so.
  assert accuracy == summary["test_accuracy"]
  assert f"(the same as summary.json's test accuracy, {summary['test_accuracy']:.4f})" in stdout


@pytest.fixture(scope="module")
def rendered(real_mnist, tmp_path_factory):
  """The first test digits rendered large, black on white and off centre, as PNG and as JPEG."""
  return training_outcomes.rendered_digits(real_mnist, tmp_path_factory.mktemp("rendered"))


def test_predict_reads_rendered_test_digits(cnn_run, rendered, jaxmnist):
  run_dir, _ = cnn_run
  paths, labels = rendered
  predictions = json.loads(jaxmnist("predict", run_dir, *paths, "--json"))["predictions"]
  assert [p["image"] for p in predictions] == [str(p) for p in paths]
  for p in predictions:
    assert len(p["top"]) == 3 and abs(sum(p["probabilities"]) - 1) < 1e-4
  correct = np.array([p["class_index"] for p in predictions]) == labels
  num = training_outcomes.NUM_RENDERED
  print(f"rendered digits predicted correctly: PNG {correct[:num].mean():.3f}, JPEG {correct[num:].mean():.3f}")
  training_outcomes.assert_clears("real_cnn", {"rendered_accuracy": float(correct.mean())})


def test_predict_prints_the_digit_and_top_3(cnn_run, rendered, jaxmnist):
  run_dir, _ = cnn_run
  paths, labels = rendered
  stdout = jaxmnist("predict", run_dir, paths[0])
  assert stdout.startswith(f"{paths[0]}: {labels[0]}   ({labels[0]}: ")
  assert stdout.count(": ") == 4  # the file, then three classes with their probabilities


def test_predict_refuses_a_bad_image_naming_the_file(cnn_run, tmp_path, jaxmnist_in_process):
  """Exit 2, one paragraph, no traceback. (Every kind of bad picture, and its message, is
  tests/test_preprocess.py's; that the process's exit code and stderr are main's, tests/test_cli.py's.)"""
  (tmp_path / "notes.png").write_text("not an image\n")
  result = jaxmnist_in_process("predict", cnn_run[0], "notes.png")
  assert result.returncode == 2, result.stderr
  assert "notes.png" in result.stderr and "is not an image" in result.stderr.lower(), result.stderr
  assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_commands_refuse_a_directory_that_is_not_a_run(tmp_path, jaxmnist_in_process):
  for command in (["evaluate", tmp_path], ["predict", tmp_path, "x.png"], ["export", tmp_path]):
    result = jaxmnist_in_process(*command)
    assert result.returncode == 2 and "is not a jaxmnist run" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_export_into_a_folder_that_does_not_exist_is_refused(tiny_cli_run, tmp_path, jaxmnist_in_process):
  out = tmp_path / "missing" / "model.jaxexport"
  result = jaxmnist_in_process("export", tiny_cli_run.run_dir, f"--out={out}")
  assert result.returncode == 2
  assert result.stderr.strip() == (f"error: --out {out}: the folder {out.parent} does not exist. Create it or "
                                   f"choose another path.")
  assert not out.parent.exists()


def test_exported_model_runs_in_a_fresh_process_and_matches_the_checkpoint(cnn_run, checkpoint_logits, real_mnist,
                                                                          jaxmnist, tmp_path):
  run_dir, _ = cnn_run
  jaxmnist("export", run_dir, f"--out={tmp_path / 'cnn.jaxexport'}")
  chunks = {f"c{i:02d}": real_mnist.test_images[i:i + 1000] for i in range(0, 10000, 1000)}
  child, logits = _run_in_fresh_python(tmp_path / "cnn.jaxexport", chunks, tmp_path)
  assert not child["jaxmnist_importable"] and "flax" not in child["loaded"]
  exported_logits = np.concatenate([logits[name] for name in sorted(chunks)])

  test_logits = checkpoint_logits[0]
  assert exported_logits.shape == (10000, 10)
  # The artifact runs the native convolution, the checkpoint's model im2col on CPU: last bits differ.
  np.testing.assert_allclose(exported_logits, test_logits, rtol=1e-4, atol=1e-4)
  agreement.assert_same_predictions(exported_logits, test_logits, "the artifact and the checkpoint")
