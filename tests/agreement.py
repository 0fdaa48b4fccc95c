"""Whether two differently compiled programs agree on one model's predictions, on any CPU.

Synopsis:
  from tests import agreement
  agreement.assert_same_predictions(exported_logits_NxC, checkpoint_logits_NxC)
  agreement.assert_same_count(summary_correct, logits_NxC, labels_N, "summary.json's test accuracy")

Training's `count_correct`, evaluate's scan of logits and an exported artifact compute the same logits,
but XLA fuses and orders each program's float operations its own way, differently on another CPU: they
agree to about 1e-5, not bit for bit. Where a model's top two logits are that close, the predicted class
may differ between them. These checks allow exactly that, on near ties only, and only a few of them:
any other difference, or many near ties, fails.
"""

import numpy as np

NEAR_TIE = 1e-3  # top two logits closer than this may swap between programs (they differ by ~1e-5)
MAX_NEAR_TIES = 10  # more than this many would leave room for a real difference to hide


def near_ties(logits_NxC, margin: float = NEAR_TIE) -> np.ndarray:
  """bool [N]: the examples whose two highest logits lie within `margin` of each other."""
  top2_Nx2 = np.sort(np.asarray(logits_NxC), axis=-1)[:, -2:]
  return top2_Nx2[:, 1] - top2_Nx2[:, 0] < margin


def _assert_few(ties_N, what: str) -> None:
  assert ties_N.sum() <= MAX_NEAR_TIES, (
      f"{what}: {ties_N.sum()} near ties (top two logits within {NEAR_TIE}), more than {MAX_NEAR_TIES}")


def assert_same_predictions(logits_a_NxC, logits_b_NxC, what: str = "the two programs") -> None:
  """Both name the same class for every example, except where either has a near tie."""
  logits_a_NxC, logits_b_NxC = np.asarray(logits_a_NxC), np.asarray(logits_b_NxC)
  assert logits_a_NxC.shape == logits_b_NxC.shape
  ties_N = near_ties(logits_a_NxC) | near_ties(logits_b_NxC)
  _assert_few(ties_N, what)
  differ_N = (logits_a_NxC.argmax(-1) != logits_b_NxC.argmax(-1)) & ~ties_N
  assert not differ_N.any(), f"{what}: {differ_N.sum()} of {len(differ_N)} clear predictions differ"


def assert_same_count(count: int, logits_NxC, labels_N, what: str) -> None:
  """`count` correct examples, counted by another program, is what `logits_NxC` give, up to its near ties."""
  ties_N = near_ties(logits_NxC)
  _assert_few(ties_N, what)
  clear_correct = int(((np.asarray(logits_NxC).argmax(-1) == np.asarray(labels_N)) & ~ties_N).sum())
  assert clear_correct <= count <= clear_correct + int(ties_N.sum()), (
      f"{what}: {count} correct, but the logits give {clear_correct} (+ up to {ties_N.sum()} near ties)")


def correct_count(accuracy: float, num_examples: int) -> int:
  """The number of correct examples behind an accuracy that summary.json or evaluation.json holds."""
  count = round(accuracy * num_examples)
  assert abs(count / num_examples - accuracy) < 1e-9, f"{accuracy} is no count of {num_examples} examples"
  return count
