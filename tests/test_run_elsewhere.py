"""The README's "Run it elsewhere, compare with PyTorch" block gives commands that are real.

Every extra it installs is in pyproject.toml, every file it names exists, every command's flags parse with
that command's own parser, and what it says of pyproject (the jax pin, the Python versions) is what
pyproject says. In-process and fast: nothing trains, nothing is installed.
"""

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from jaxmnist import flags

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()
BLOCK_HEADING = "## Run it elsewhere, compare with PyTorch"


def _block() -> str:
  assert BLOCK_HEADING in README, f"the README has no section '{BLOCK_HEADING}'"
  return README.split(BLOCK_HEADING, 1)[1].split("\n## ", 1)[0]


def _code_lines(text: str) -> list[str]:
  """The lines of the text's fenced code blocks."""
  return [line for body in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M) for line in body.splitlines()]


def block_commands(text: str) -> list[list[str]]:
  """Each shell command of the code blocks: `&&`-joined parts apart, a notebook cell's leading `!` dropped,
  comments and Python statements (`NAME = ...`) left out."""
  commands = []
  for line in _code_lines(text):
    line = line.strip()
    if not line or line.startswith("#") or re.match(r"^\w+ = ", line):
      continue
    for part in line.lstrip("!").split("&&"):
      commands.append(shlex.split(part))
  return commands


def _pyproject() -> str:
  return (REPO_ROOT / "pyproject.toml").read_text()


def pyproject_extras() -> set[str]:
  """The names under [project.optional-dependencies]."""
  section = _pyproject().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
  return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))


def _import_script(path: Path, monkeypatch):
  monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts put experiments/ on the path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_block_gives_the_gpu_colab_and_pytorch_steps():
  commands = [" ".join(command) for command in block_commands(_block())]
  assert any("pip install -r requirements-gpu.txt" in c for c in commands)
  assert any(c.startswith("git clone") and "{REPO_URL}" in c for c in commands)
  assert any("pip install -e .[torch]" in c for c in commands)
  assert any(c.startswith("python experiments/reproduce_post.py") for c in commands)


def test_the_command_parser_splits_cells_and_chains():
  text = '```python\nX = "u"\n!git clone {X} d && cd d\n# a comment\n```\n```bash\npip install -e \'.[a]\'\n```\n'
  assert block_commands(text) == [["git", "clone", "{X}", "d"], ["cd", "d"], ["pip", "install", "-e", ".[a]"]]


def test_every_installed_extra_and_requirements_file_exists():
  extras, checked = pyproject_extras(), 0
  for command in block_commands(_block()):
    if command[:2] != ["pip", "install"]:
      continue
    for option, word in zip(command, command[1:]):
      if option == "-r":
        requirements = REPO_ROOT / word
        assert requirements.is_file(), f"the README installs {word}, which does not exist"
        assert "-e ." in requirements.read_text().splitlines(), f"{word} must install jaxmnist itself (-e .)"
        checked += 1
      if option == "-e":
        wanted = set(re.findall(r"\[([^\]]*)\]", word)[0].split(",")) if "[" in word else set()
        assert wanted <= extras, f"the README installs the extra(s) {wanted - extras}; pyproject has {extras}"
        checked += 1
  assert checked >= 3  # requirements-gpu.txt, Colab's clone, the torch extra


def test_every_training_command_parses(capsys):
  trains = [c for c in block_commands(_block()) if c[:3] == ["python", "-m", "jaxmnist.train"]]
  assert trains
  for command in trains:
    config = flags.config_from_args(flags.parse_train_args(command[3:]))
    assert config.model == "mlp3"
  assert not capsys.readouterr().err


def test_every_script_exists_and_its_flags_parse(monkeypatch):
  scripts = [c for c in block_commands(_block()) if c[0] == "python" and c[1].startswith("experiments/")]
  assert scripts
  for command in scripts:
    path = REPO_ROOT / command[1]
    assert path.is_file(), f"the README runs {command[1]}, which does not exist"
    module = _import_script(path, monkeypatch)
    args = module.parse_args(command[2:])
    assert set(args.models) <= set(module.MODELS), f"{command[1]} knows no model among {args.models}"
    assert args.epochs >= 1 and args.seeds


def test_colab_has_one_setting_and_the_notebook_the_same():
  code = "\n".join(_code_lines(_block()))
  settings = re.findall(r"^(\w+) = ", code, re.M)
  assert settings == ["REPO_URL"], f"the Colab cells must have one setting, REPO_URL; they have {settings}"
  notebook = (REPO_ROOT / "experiments" / "colab_tpu.ipynb").read_text()
  assert '"REPO_URL = ' in notebook, "experiments/colab_tpu.ipynb's parameters cell must name REPO_URL too"


def test_what_the_readme_says_of_pyproject_is_what_pyproject_says():
  jax_pin = re.search(r'^\s*"(jax>=[0-9.]+)",', _pyproject(), re.M).group(1)
  assert f"`{jax_pin}`" in _block(), f"the block must name pyproject's jax pin, {jax_pin}"
  python = re.search(r'^requires-python = ">=(3\.\d+)"', _pyproject(), re.M).group(1)
  assert f"Python {python} or newer" in README, f"the README must say pyproject's Python versions: {python}+"


@pytest.mark.parametrize("needle", [
    "pip install -e . && python -m jaxmnist.train --model=mlp3",  # the Quick start's two set-up commands
    "pip install -e '.[test]' && python -m pytest",
    "pip install -r requirements-gpu.txt",  # GPU
    "REPO_URL = ",  # Colab TPU
    "pip install -e '.[torch]'",  # PyTorch
    "python experiments/reproduce_post.py",
    "\nfiles: runs/",  # a real run and where it went
    "docs/after-training.md#what-a-run-leaves",
])
def test_the_first_60_lines_give_it_all(needle):
  assert needle in "\n".join(README.splitlines()[:60]), f"README's first 60 lines must give {needle!r}"
