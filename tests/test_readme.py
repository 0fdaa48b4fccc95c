"""The README's promises that a new user acts on first: its two set-up commands and its time estimate."""

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()


def _quick_start() -> str:
  return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def _commands() -> list[str]:
  return re.findall(r"```bash\n(.+?)\n```", _quick_start())


def test_ci_runs_exactly_the_readmes_test_command():
  main_command, test_command = _commands()
  assert "pip install -e ." in main_command and "jaxmnist.train --model=mlp3" in main_command
  assert test_command.endswith("python -m pytest")
  ci_commands = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
                 if "-m venv" in line or "pytest" in line]
  assert ci_commands[0] == test_command  # the first thing CI runs


def test_quick_start_gives_a_time_range_on_a_named_machine():
  # One figure from one fast moment misleads: these 2-core machines vary by 1.5x between runs.
  estimate = re.search(r"(\d+) to (\d+) minutes on a ([^)\n.,]+)", _quick_start())
  assert estimate, "the Quick start must give a range of minutes and name the machine"
  low, high = int(estimate.group(1)), int(estimate.group(2))
  assert low < high and "CPU" in estimate.group(3)
