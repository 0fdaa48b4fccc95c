"""The package's shape, which readers rely on: imports run one way, the command loads no jax, and the
values a Config may take are exactly the ones the code implements."""

import ast
import dataclasses
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import augment, configs, models
from jaxmnist.configs import PRESETS
from jaxmnist.optimizer import learning_rate_schedule, make_optimizer
from tests.test_cli import REPO_ROOT

PACKAGE = REPO_ROOT / "jaxmnist"


def _imports_of(path) -> set[str]:
  """The jaxmnist modules that `path` imports anywhere, inside functions too."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module == "jaxmnist":
      found |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxmnist."):
      found.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("jaxmnist.")}
  return found


def test_imports_run_one_way():
  modules = {path.stem: path for path in PACKAGE.glob("*.py")}
  graph = {name: _imports_of(path) & set(modules) - {name, "__init__"} for name, path in modules.items()}
  done, on_path = set(), []

  def visit(name):
    if name in on_path:
      cycle = on_path[on_path.index(name):] + [name]
      pytest.fail(f"import cycle: {' -> '.join(cycle)}")
    if name in done:
      return
    on_path.append(name)
    for imported in sorted(graph[name]):
      visit(imported)
    on_path.pop()
    done.add(name)

  for name in sorted(graph):
    visit(name)
  assert "train" in graph["cli"] and "cli" not in graph["train"]  # the check sees imports inside functions


def _modules_loaded_by(code: str) -> set[str]:
  result = subprocess.run([sys.executable, "-c", f"{code}; import sys; print(' '.join(sys.modules))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)
  return {name.split(".")[0] for name in result.stdout.split()}


def test_the_command_and_its_flags_load_no_jax():
  loaded = _modules_loaded_by("from jaxmnist import cli, flags; flags.build_parser().format_help()")
  assert not loaded & {"jax", "jaxlib", "flax", "optax", "orbax", "chex", "tensorflow_datasets"}, loaded


def test_reading_a_runs_config_back_loads_no_jax():  # every RUN_DIR command does it before anything else
  code = ("import json, tempfile, pathlib; from jaxmnist import configs, runs; d = pathlib.Path(tempfile.mkdtemp()); "
          "(d / 'config.json').write_text(json.dumps(configs.config_to_dict(configs.PRESETS['cnn_fast']))); "
          "runs.read_config(d)")
  loaded = _modules_loaded_by(code)
  assert not loaded & {"jax", "jaxlib", "flax", "optax", "orbax", "chex"}, loaded


@pytest.mark.parametrize("module, mentions", [("jaxmnist", "a page to draw digits on"),
                                              ("jaxmnist.train", "--resume RUN_DIR")])
def test_python_dash_m_is_the_command(module, mentions):
  result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
  assert result.returncode == 0, result.stderr
  assert mentions in result.stdout and f"usage: python -m {module}" in result.stdout


def test_a_mistyped_subcommand_is_one_paragraph(capsys):
  from jaxmnist import cli  # pylint: disable=g-import-not-at-top

  with pytest.raises(SystemExit) as exit_info:
    cli.main(["trian"])
  assert exit_info.value.code == 2
  assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_every_augmentation_and_init_a_config_may_name_exists():
  assert tuple(augment.AUGMENTATIONS) == configs.AUGMENTATIONS
  assert tuple(models.MODELS) == configs.MODEL_NAMES
  for init in configs.INIT_SCHEMES:
    models.build_model("linear", init)  # raises for a scheme models does not know


def test_each_schedule_a_config_may_name_is_its_own():
  base = dataclasses.replace(PRESETS["mlp3"], optimizer="adam")
  curves = {name: tuple(float(learning_rate_schedule(dataclasses.replace(base, schedule=name), 100)(step))
                        for step in (0, 50, 99)) for name in configs.SCHEDULES}
  assert len(set(curves.values())) == len(configs.SCHEDULES), curves


def test_each_optimizer_a_config_may_name_is_its_own():
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, 0.5, -0.1])}
  updates = {}
  for name in configs.OPTIMIZERS:
    tx = make_optimizer(dataclasses.replace(PRESETS["mlp3"], optimizer=name, weight_decay=0.01), 10)
    update, _ = tx.update(grads, tx.init(params), params)
    updates[name] = tuple(np.round(np.asarray(update["w"]), 6))
  assert len(set(updates.values())) == len(configs.OPTIMIZERS), updates


def test_the_post_is_beside_a_run_of_its_own_recipe_only():
  post = configs.post_result
  assert post(PRESETS["mlp3"]) is configs.POST_RESULTS["mlp3"]
  assert post(dataclasses.replace(PRESETS["linear"], epochs=20, seed=3, valid_fraction=0.0))
  # `tiny` trains the post's mlp3 architecture with another rate and batch: not the post's recipe, whether
  # it was started from its preset name or resumed from its config.json (which names only "mlp3").
  assert PRESETS["tiny"].model == "mlp3" and post(PRESETS["tiny"]) is None
  assert post(dataclasses.replace(PRESETS["mlp3"], learning_rate=0.1)) is None
  assert post(PRESETS["mlp3_modern"]) is None and post(PRESETS["cnn"]) is None
  assert post(dataclasses.replace(PRESETS["mlp3"], dataset="fashion_mnist")) is None
