"""`jaxmnist ARGS`, run in this process, which signals itself at a named moment of its checkpointing: a
Ctrl-C or a kill -9 that lands where a test wants it, not wherever a poll of the disk happened to see it.

Synopsis (tests/test_checkpoint.py starts it as a user's `jaxmnist` process, with PYTHONPATH at the repo):
  python -m tests.signal_at saved:2 INT -- train --model=tiny ...   # Ctrl-C once the 2nd checkpoint is complete
  python -m tests.signal_at saved:1 KILL -- train ...               # kill -9 once the 1st checkpoint is complete
  python -m tests.signal_at writing:1 KILL -- train --resume=run    # kill -9 while the 1st is being written

`saved:N` wraps `checkpoint.Saver.save`: after the Nth call it waits for that write to finish, then sends
the signal, in the training loop's own thread, at the end of that epoch. `writing:N` wraps orbax's
`AtomicRenameTemporaryPath.finalize`, which turns a finished temporary folder into the checkpoint: on the
Nth call the signal comes first, so the folder is left half-way, as a kill during the write leaves it.
"""

import functools
import os
import signal
import sys

from jaxmnist import checkpoint, cli


def _after_saves(count: int, signum: int) -> None:
  original, calls = checkpoint.Saver.save, []

  @functools.wraps(original)
  def save(self, *args, **kwargs):
    original(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == count:
      self._manager.wait_until_finished()  # the Nth checkpoint complete on disk
      os.kill(os.getpid(), signum)
  checkpoint.Saver.save = save


def _while_writing(count: int, signum: int) -> None:
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top

  original, calls = atomicity.AtomicRenameTemporaryPath.finalize, []

  @functools.wraps(original)
  async def finalize(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == count:
      os.kill(os.getpid(), signum)  # from orbax's writing thread: SIGKILL ends the whole process at once
    return await original(self, *args, **kwargs)
  atomicity.AtomicRenameTemporaryPath.finalize = finalize


def main(argv: list[str]) -> None:
  moment, name, separator, *args = argv
  assert separator == "--", "usage: python -m tests.signal_at MOMENT SIGNAL -- JAXMNIST_ARGS"
  when, count = moment.split(":")
  {"saved": _after_saves, "writing": _while_writing}[when](int(count), getattr(signal, f"SIG{name}"))
  cli.main(args)


if __name__ == "__main__":
  main(sys.argv[1:])
