"""`jaxmnist predict`'s inference cache: the answer it reads with jax alone is the checkpoint's, and a
stale, damaged or unwritable cache never changes an answer (jaxmnist.predict)."""

import json
import shutil

import numpy as np
import pytest

from jaxmnist import cli, predict, preprocess, train_state
from tests import serving
from tests.conftest import jaxmnist_cli
from tests.test_write_failures import _jaxmnist, _on_a_small_disk, needs_namespaces

HEAVY = ("flax", "optax", "orbax", "chex")  # what the cached path exists to avoid importing


@pytest.fixture
def picture(tmp_path):
  path = tmp_path / "digit.png"
  path.write_bytes(serving.drawing())
  return path


def _copy(run, tmp_path):
  """A copy of a session run, which tests must not change: predict writes its cache into the run."""
  return shutil.copytree(run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(predict.INFERENCE_CACHE))


def _predict(capsys, run_dir, *args) -> str:
  """`jaxmnist predict RUN_DIR ARGS` through the CLI's own main in this process: what it printed."""
  cli.main(["predict", str(run_dir), *map(str, args)])
  return capsys.readouterr().out


def _json(capsys, run_dir, *pictures) -> dict:
  return json.loads(_predict(capsys, run_dir, *pictures, "--json"))


def _checkpoints(run_dir, *pictures):
  """What the checkpoint itself says, through flax: predict's path before the cache."""
  return predict.outputs_fn(train_state.load_trained(run_dir))(preprocess.to_mnist_batch(pictures))


def _probabilities(answer: dict) -> np.ndarray:
  return np.array([p["probabilities"] for p in answer["predictions"]])


def _imported(stderr: str) -> set[str]:
  """Top-level packages that `python -X importtime` says were imported."""
  return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")}


def test_the_second_predict_reads_the_cache_with_jax_alone_and_answers_as_the_checkpoint(tiny_cli_run, picture,
                                                                                           tmp_path):
  run_dir = _copy(tiny_cli_run, tmp_path)
  first, second = (jaxmnist_cli("predict", run_dir, picture, "--json", cwd=tmp_path, cache_dir=tmp_path / "cache",
                                env={"PYTHONPROFILEIMPORTTIME": "1"}) for _ in range(2))
  assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
  assert (run_dir / predict.INFERENCE_CACHE).is_file()
  assert set(HEAVY) <= _imported(first.stderr)  # the first restores the checkpoint, and writes the cache
  assert "jax" in _imported(second.stderr) and not _imported(second.stderr) & set(HEAVY)
  cached, restored = json.loads(second.stdout), json.loads(first.stdout)
  assert {k: v for k, v in cached.items() if k != "predictions"} == {k: v for k, v in restored.items()
                                                                      if k != "predictions"}
  probabilities_NxC, _ = _checkpoints(run_dir, picture)
  np.testing.assert_allclose(_probabilities(cached), probabilities_NxC, atol=2e-6)
  np.testing.assert_allclose(_probabilities(restored), probabilities_NxC, atol=2e-6)
  assert cached["checkpoint_epoch"] == 3


def test_an_ensemble_answers_from_the_cache_with_its_members_agreeing(tiny_ensemble_cli_run, picture, tmp_path,
                                                                      capsys):
  run_dir = _copy(tiny_ensemble_cli_run, tmp_path)
  pictures = [picture, tmp_path / "other.png"]
  pictures[1].write_bytes(serving.drawing(strokes=[[(60, 60), (220, 220)], [(220, 60), (60, 220)]]))
  restored = _json(capsys, run_dir, *pictures)
  assert (run_dir / predict.INFERENCE_CACHE).is_file()
  cached = _json(capsys, run_dir, *pictures)
  assert predict.read_cache(run_dir) is not None and cached["members"] == 2
  probabilities_NxC, agreeing_N = _checkpoints(run_dir, *pictures)
  for answer in (restored, cached):
    np.testing.assert_allclose(_probabilities(answer), probabilities_NxC, atol=2e-6)
    assert [p["members_agreeing"] for p in answer["predictions"]] == [int(a) for a in agreeing_N]
  assert "of 2 members agree" in _predict(capsys, run_dir, picture)


def test_fashion_class_names_come_with_the_cached_answer(tiny_fashion_cli_run, picture, tmp_path, capsys):
  run_dir = _copy(tiny_fashion_cli_run, tmp_path)
  restored = _predict(capsys, run_dir, picture)
  cached = _predict(capsys, run_dir, picture)
  assert predict.read_cache(run_dir) is not None and cached == restored
  answer = _json(capsys, run_dir, picture)
  assert answer["class_names"][0] == "T-shirt/top" and answer["predictions"][0]["prediction"] in answer["class_names"]


DAMAGE = {
    "a flipped byte in the program": lambda blob: blob[:-100] + bytes([blob[-100] ^ 0xFF]) + blob[-99:],
    "cut short": lambda blob: blob[:len(blob) // 2],
    "a header that is not JSON": lambda blob: b"{not json" + blob[blob.index(b"\n"):],
    "empty": lambda blob: b"",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_is_passed_over_and_written_again(tiny_cli_run, picture, tmp_path, capsys,
                                                          damage):
  run_dir = _copy(tiny_cli_run, tmp_path)
  good = _json(capsys, run_dir, picture)
  path = run_dir / predict.INFERENCE_CACHE
  intact = path.read_bytes()
  path.write_bytes(DAMAGE[damage](intact))
  assert predict.read_cache(run_dir) is None
  answer = _json(capsys, run_dir, picture)
  np.testing.assert_allclose(_probabilities(answer), _probabilities(good), atol=2e-6)
  assert predict.read_cache(run_dir) is not None  # written again, whole


def test_a_newer_checkpoint_is_never_answered_by_an_older_cache(tiny_cli_run, picture, tmp_path, capsys):
  run_dir = _copy(tiny_cli_run, tmp_path)
  newest = run_dir / "checkpoints" / "3"
  held_back = shutil.move(newest, tmp_path / "3")  # the run as it was before its last epoch was saved
  older = _json(capsys, run_dir, picture)
  assert older["checkpoint_epoch"] == 2 and predict.read_cache(run_dir).epoch == 2
  shutil.move(held_back, newest)  # ... and once it was: as `--resume` or a running training adds one
  assert predict.read_cache(run_dir) is None
  answer = _json(capsys, run_dir, picture)
  assert answer["checkpoint_epoch"] == 3
  probabilities_NxC, _ = _checkpoints(run_dir, picture)
  np.testing.assert_allclose(_probabilities(answer), probabilities_NxC, atol=2e-6)
  assert not np.allclose(_probabilities(answer), _probabilities(older), atol=1e-4)  # epoch 3 is another model


def test_a_checkpoint_damaged_after_the_cache_was_written_is_not_answered_from_it(tiny_cli_run, picture, tmp_path,
                                                                                  capsys):
  run_dir = _copy(tiny_cli_run, tmp_path)
  assert _json(capsys, run_dir, picture)["checkpoint_epoch"] == 3
  arrays = max((p for p in (run_dir / "checkpoints" / "3").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  arrays.write_bytes(arrays.read_bytes()[:arrays.stat().st_size // 2])
  assert predict.read_cache(run_dir) is None
  # The restore passes over the damaged checkpoint, as it always did, and answers with the one before.
  assert _json(capsys, run_dir, picture)["checkpoint_epoch"] == 2


def test_an_edited_config_makes_the_cache_stale(tiny_cli_run, picture, tmp_path, capsys):
  run_dir = _copy(tiny_cli_run, tmp_path)
  _json(capsys, run_dir, picture)
  config = json.loads((run_dir / "config.json").read_text())
  (run_dir / "config.json").write_text(json.dumps({**config, "keep_checkpoints": 5}))
  assert predict.read_cache(run_dir) is None


@needs_namespaces
@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_a_run_the_cache_cannot_be_written_into_still_gets_its_answer(tiny_cli_run, picture, tmp_path, disk):
  # The run in tmpfs's 4 kB pages, and 300 kB to spare: a "full" disk has no room for the ~1 MB cache.
  size_kb = sum(4 * -(-p.stat().st_size // 4096) if p.is_file() else 4 for p in tiny_cli_run.run_dir.rglob("*")) + 300
  remount = "mount -o remount,ro disk" if disk == "read-only" else "true"
  predict_ = _jaxmnist("predict", "disk/run", picture, "--json")
  result = _on_a_small_disk(tmp_path, f"cp -a {tiny_cli_run.run_dir} disk/run && rm -f disk/run/{predict.INFERENCE_CACHE} && {remount} && {predict_} >out.json "
                                      f"2>err.txt; echo $? >code.txt; ls -a disk/run >files.txt", size_kb)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "code.txt").read_text().strip() == "0", (tmp_path / "err.txt").read_text()
  assert "Traceback" not in (tmp_path / "err.txt").read_text()
  files = (tmp_path / "files.txt").read_text().split()
  assert predict.INFERENCE_CACHE not in files and not [name for name in files if ".partial" in name]
  probabilities_NxC, _ = _checkpoints(tiny_cli_run.run_dir, picture)
  np.testing.assert_allclose(_probabilities(json.loads((tmp_path / "out.json").read_text())), probabilities_NxC,
                             atol=2e-6)
