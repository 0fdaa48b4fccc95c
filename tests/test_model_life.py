"""A trained model's life after training, on a real `cnn` run: the evaluation report, `jaxmnist evaluate`,
`jaxmnist predict` on digits rendered as a person's pictures, every bad image, and `jaxmnist export`
run in a fresh process that has only jax."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxmnist import evaluate, train_state
from tests import render_digits
from tests.conftest import jaxmnist_cli
from tests.test_export import _run_in_fresh_python  # pylint: disable=protected-access

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_RENDERED = 100  # per format: PNG and JPEG


def test_training_ends_with_the_evaluation_report(cnn_run):
  run_dir, result = cnn_run
  summary = json.loads((run_dir / "summary.json").read_text())
  evaluation = json.loads((run_dir / "evaluation.json").read_text())
  assert evaluation["test"]["accuracy"] == summary["test_accuracy"] >= 0.98  # the preset reaches ~0.991
  assert evaluation["validation"]["accuracy"] == summary["valid_accuracy"]
  assert evaluation["test"]["num_examples"] == 10000 and evaluation["validation"]["num_examples"] == 12000
  assert np.asarray(evaluation["test"]["confusion"]).sum() == 10000
  assert len(evaluation["test"]["per_class"]) == 10 and len(evaluation["top_losses"]) == evaluate.NUM_TOP_LOSSES
  assert all(t["predicted"] != t["label"] for t in evaluation["top_losses"])
  for name in ("confusion.png", "top_losses.png"):
    assert (run_dir / name).read_bytes()[:8] == PNG_SIGNATURE
  assert not (run_dir / "weights.png").exists()  # the linear model's picture only
  assert "| class | precision | recall |" in result.stdout


def test_evaluate_command_agrees_with_the_summary(cnn_run, real_cache_dir, tmp_path):
  run_dir, _ = cnn_run
  result = jaxmnist_cli("evaluate", run_dir, cwd=tmp_path, cache_dir=real_cache_dir)
  assert result.returncode == 0, result.stderr
  assert "the same as summary.json's test accuracy" in result.stdout


@pytest.fixture(scope="module")
def rendered(real_mnist, tmp_path_factory):
  """The first test digits rendered large, black on white and off centre, as PNG and as JPEG."""
  tmp = tmp_path_factory.mktemp("rendered")
  images = real_mnist.test_images[:NUM_RENDERED, ..., 0]
  paths = (render_digits.write_digits(images, tmp / "png", "png")
           + render_digits.write_digits(images, tmp / "jpeg", "jpeg"))
  return paths, np.concatenate([real_mnist.test_labels[:NUM_RENDERED]] * 2)


def test_predict_reads_rendered_test_digits(cnn_run, real_cache_dir, rendered, tmp_path):
  run_dir, _ = cnn_run
  paths, labels = rendered
  result = jaxmnist_cli("predict", run_dir, *paths, "--json", cwd=tmp_path, cache_dir=real_cache_dir)
  assert result.returncode == 0, result.stderr
  predictions = json.loads(result.stdout)["predictions"]
  assert [p["image"] for p in predictions] == [str(p) for p in paths]
  for p in predictions:
    assert len(p["top"]) == 3 and abs(sum(p["probabilities"]) - 1) < 1e-4
  correct = np.array([p["class_index"] for p in predictions]) == labels
  print(f"rendered digits predicted correctly: PNG {correct[:NUM_RENDERED].mean():.3f}, "
        f"JPEG {correct[NUM_RENDERED:].mean():.3f}")
  assert correct.mean() >= 0.98


def test_predict_prints_the_digit_and_top_3(cnn_run, real_cache_dir, rendered, tmp_path):
  run_dir, _ = cnn_run
  paths, labels = rendered
  result = jaxmnist_cli("predict", run_dir, paths[0], cwd=tmp_path, cache_dir=real_cache_dir)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"{paths[0]}: {labels[0]}   ({labels[0]}: ")
  assert result.stdout.count(": ") == 4  # the file, then three classes with their probabilities


def _bad_images(tmp_path):
  (tmp_path / "notes.png").write_text("not an image\n")
  Image.new("L", (300, 200), 255).save(tmp_path / "blank.png")
  Image.new("1", (9000, 9000), 1).save(tmp_path / "huge.png")  # 81 megapixels, a small file
  return {"notes.png": "is not an image", "missing.png": "does not exist", "blank.png": "is blank",
          "huge.png": "pixels"}


def test_predict_refuses_bad_images_naming_the_file(cnn_run, real_cache_dir, tmp_path):
  run_dir, _ = cnn_run
  for name, reason in _bad_images(tmp_path).items():
    result = jaxmnist_cli("predict", run_dir, name, cwd=tmp_path, cache_dir=real_cache_dir)
    assert result.returncode == 2, (name, result.stderr)
    assert name in result.stderr and reason in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_commands_refuse_a_directory_that_is_not_a_run(real_cache_dir, tmp_path):
  for command in (["evaluate", tmp_path], ["predict", tmp_path, "x.png"], ["export", tmp_path]):
    result = jaxmnist_cli(*command, cwd=tmp_path, cache_dir=real_cache_dir)
    assert result.returncode == 2 and "is not a jaxmnist run" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_exported_model_runs_in_a_fresh_process_and_matches_the_checkpoint(cnn_run, real_cache_dir,
                                                                          real_mnist, tmp_path):
  run_dir, _ = cnn_run
  result = jaxmnist_cli("export", run_dir, f"--out={tmp_path / 'cnn.jaxexport'}", cwd=tmp_path,
                        cache_dir=real_cache_dir)
  assert result.returncode == 0, result.stderr
  chunks = {f"c{i:02d}": real_mnist.test_images[i:i + 1000] for i in range(0, 10000, 1000)}
  child, logits = _run_in_fresh_python(tmp_path / "cnn.jaxexport", chunks, tmp_path)
  assert not child["jaxmnist_importable"] and "flax" not in child["loaded"]
  exported_logits = np.concatenate([logits[name] for name in sorted(chunks)])

  trained = train_state.load_trained(run_dir)
  checkpoint_logits = evaluate.split_logits(trained, real_mnist.test_images,
                                            np.arange(len(real_mnist.test_labels), dtype=np.int32))
  assert exported_logits.shape == (10000, 10)
  # The artifact runs the native convolution, the checkpoint's model im2col on CPU: last bits differ.
  np.testing.assert_allclose(exported_logits, checkpoint_logits, rtol=1e-4, atol=1e-4)
  agree = exported_logits.argmax(-1) == checkpoint_logits.argmax(-1)
  assert agree.all(), f"{(~agree).sum()} of 10000 test predictions differ"
