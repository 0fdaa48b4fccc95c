"""The size budgets a reader of the package and the docs meets (docs/layout.md states them)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_LINES, MODULE_LINES, TRAIN_LINES, DOCS_CHARACTERS = 4300, 320, 250, 60_000


def _lines(path: Path) -> int:
  return len(path.read_text().splitlines())


def test_the_package_and_each_module_stay_within_their_lines():
  modules = {path.name: _lines(path) for path in (REPO_ROOT / "jaxmnist").glob("*.py")}
  assert sum(modules.values()) <= PACKAGE_LINES, f"the package has {sum(modules.values())} lines"
  assert not {name: n for name, n in modules.items() if n > MODULE_LINES}, "modules over the budget"
  assert modules["train.py"] <= TRAIN_LINES


def test_readme_and_docs_stay_within_their_characters():
  pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
  sizes = {page.name: len(page.read_text()) for page in pages}
  assert sum(sizes.values()) <= DOCS_CHARACTERS, f"README plus docs/ hold {sum(sizes.values())} characters: {sizes}"
