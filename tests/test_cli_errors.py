"""Mistakes that stop a command before it trains, each one paragraph and exit 2: a config.json that cannot
be read, a launcher's bad JAX_NUM_PROCESSES / JAX_PROCESS_ID, a --num-devices this job does not have.

The `jaxmnist` command runs in-process (`cli.main`); each of these fails before any data is read or
anything is compiled.
"""

import jax
import pytest

from jaxmnist import cli


def _fails(capsys, *args) -> str:
  """Runs `jaxmnist ARGS`; returns its one-line message once it has exited with code 2."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(list(map(str, args)))
  stderr = capsys.readouterr().err
  lines = stderr.strip().splitlines()
  assert exit_info.value.code == 2, stderr
  assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
  return lines[0]


def _no_data(tmp_path):
  """Data flags that fail at once: were a check below gone, the run would stop there, not fetch MNIST."""
  return ("--source=dir", f"--data-dir={tmp_path / 'no-data'}")


# What a config.json can be that no JSON parser reads: cut short, not text, not even a file.
UNREADABLE = {
    "not JSON": lambda path: path.write_text('{"model": "mlp3", "epochs": '),
    "not UTF-8": lambda path: path.write_bytes(b'{"model": "\xff\xfe"}'),
    "a folder": lambda path: path.mkdir(),
}


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "resume"])
@pytest.mark.parametrize("damage", UNREADABLE)
def test_an_unreadable_config_json_is_one_paragraph(tmp_path, capsys, damage, command):
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  UNREADABLE[damage](run_dir / "config.json")
  args = {"evaluate": ("evaluate", run_dir), "predict": ("predict", run_dir, tmp_path / "digit.png"),
          "export": ("export", run_dir), "resume": ("train", f"--resume={run_dir}")}[command]
  message = _fails(capsys, *args)
  assert f"{run_dir / 'config.json'} is not a readable jaxmnist config (" in message
  assert message.endswith("Give another run directory.")


@pytest.mark.parametrize("env, named", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "one"}, "JAX_PROCESS_ID='one'"),
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two'"),
])
def test_a_launchers_bad_process_count_or_rank_is_one_paragraph(tmp_path, capsys, monkeypatch, env, named):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  message = _fails(capsys, "train", "--model=tiny", f"--workdir={tmp_path / 'run'}", *_no_data(tmp_path))
  assert f"{named} is not a non-negative integer" in message
  assert "JAX_NUM_PROCESSES" in message and "JAX_PROCESS_ID" in message  # it says what each should hold
  assert not (tmp_path / "run").exists()  # refused before the run directory is made


@pytest.mark.parametrize("which", ["one more than there are", "zero"])
def test_a_num_devices_this_job_lacks_is_one_paragraph(tmp_path, capsys, which):
  available = jax.device_count()
  asked = available + 1 if which == "one more than there are" else 0
  message = _fails(capsys, "train", "--model=tiny", f"--num-devices={asked}", f"--workdir={tmp_path / 'run'}",
                   *_no_data(tmp_path))
  assert (f"--num-devices={asked} is not available: this job sees {available} device(s) (cpu). "
          f"Choose a number from 1 to {available}.") in message
  assert not (tmp_path / "run").exists()
