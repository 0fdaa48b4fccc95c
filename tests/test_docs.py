"""The README and docs/ keep their promises: links resolve, named files exist, excerpts match the code.

Checked in README.md and every docs/*.md:
- every relative link, `[text](path)` or `![alt](path)`, resolves from the file that has it (http(s)
  and mailto links are not followed), and every `#anchor` in a link names a heading of its target,
  by GitHub's rules for heading ids;
- every repository path named in backticks or in a code block (a token starting with jaxmnist/,
  tests/, experiments/, docs/ or .ci/) exists; outputs such as runs/... are not repository paths,
  and glob patterns are skipped;
- the README stays the front page (at most README_MAX_CHARS characters), and each docs page opens with
  a ```bash block of its commands before its first "## " section;
- docs/layout.md names every module of the package (a removed one is caught by the path check).

docs/from-pytorch.md marks each excerpt of jaxmnist's code with an HTML comment on the line before
its fenced python block:

    <!-- names: jaxmnist/steps.py: train_step, cross_entropy_loss -->

Each name must be a top-level def, class or assignment of that file (read with `ast`), and the block
that follows must be copied from that file: its lines, whitespace normalised, appear in the file in
order and consecutively, except where a line `...` stands for lines left out. Python blocks without a
marker are the post's PyTorch code and are not checked against anything.
"""

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README_MAX_CHARS = 15_000
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [REPO_ROOT / "README.md", *DOCS]
PATH_PREFIXES = ("jaxmnist/", "tests/", "experiments/", "docs/", ".ci/")
POST_PIECES = ("SubsetRandomSampler", "DataLoader", "nn.Linear", "nn.Sequential", "CrossEntropyLoss",
               "calc_grad", "optimizer.step", "zero_grad", "batch_accuracy", "validate_epoch", "train_model")

FENCE = re.compile(r"^( *)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
MARKER = re.compile(r"^<!--\s*names:\s*(\S+?):\s*([^>]*?)\s*-->", re.M)  # at a line's start


def _rel(path: Path) -> str:
  return str(path.relative_to(REPO_ROOT))


def _split_code(text: str) -> tuple[str, list[tuple[str, str]]]:
  """The text with its fenced blocks blanked out, and the blocks as (info string, body)."""
  blocks = [(m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]
  prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
  return prose, blocks


def _prose(text: str) -> str:
  """Text outside code blocks and inline code, where links and headings live."""
  prose, _ = _split_code(text)
  return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)


def links(text: str) -> list[str]:
  return LINK.findall(_prose(text))


def github_slug(heading: str) -> str:
  """GitHub's id for a heading: markup removed, lowercased, punctuation but - and _ dropped, spaces to -."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
  text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
  text = text.strip().lower()
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
  """The ids of a page's headings, with GitHub's -1, -2 ... for repeated ones."""
  seen: dict[str, int] = {}
  ids = set()
  for line in _split_code(text)[0].splitlines():
    match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
    if not match:
      continue
    slug = github_slug(match.group(1))
    ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
    seen[slug] = seen.get(slug, 0) + 1
  return ids


def _expand_braces(token: str) -> list[str]:
  match = re.search(r"\{([^{}]*,[^{}]*)\}", token)
  if not match:
    return [token]
  return [expanded for part in match.group(1).split(",")
          for expanded in _expand_braces(token[:match.start()] + part.strip() + token[match.end():])]


def repo_paths(text: str) -> list[str]:
  """Repository paths named in inline code or code blocks: tokens that start with a known folder."""
  prose, blocks = _split_code(text)
  code = [body for _, body in blocks] + [m.group(2) for m in INLINE_CODE.finditer(prose)]
  paths = []
  for chunk in code:
    for token in re.split(r"[\s\"'`()\[\]<>=|]+", chunk):
      token = token.rstrip(".,;:!?")
      if not token.startswith(PATH_PREFIXES) or any(c in token for c in "*?$"):
        continue  # glob patterns and shell variables name no one file
      paths.extend(_expand_braces(token))
  return paths


def test_link_scanner_finds_links_outside_code_only():
  text = "See [a](docs/a.md#x), ![b](pic.png) and [c](https://e.org).\n`[d](no.md)`\n```\n[e](no2.md)\n```\n"
  assert links(text) == ["docs/a.md#x", "pic.png", "https://e.org"]


def test_github_slug_follows_githubs_rules():
  assert github_slug("The post, reproduced: jaxmnist and PyTorch side by side") == \
      "the-post-reproduced-jaxmnist-and-pytorch-side-by-side"
  assert github_slug("Time to accuracy: `python experiments/bench_fast.py`") == \
      "time-to-accuracy-python-experimentsbench_fastpy"
  assert github_slug("CPU, GPU, TPU, several hosts") == "cpu-gpu-tpu-several-hosts"
  assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_path_scanner_reads_code_and_skips_outputs_and_globs():
  text = ("`jaxmnist/steps.py`, `runs/cnn/x`, `~/.cache/jaxmnist/xla`, `docs/*.md`\n"
          "```\nexperiments/results/bench_fast-{cpu,gpu}.md  .ci/run,\n```\n")
  assert repo_paths(text) == ["experiments/results/bench_fast-cpu.md", "experiments/results/bench_fast-gpu.md",
                              ".ci/run", "jaxmnist/steps.py"]


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
  broken = []
  for target in links(page.read_text()):
    if re.match(r"^(https?:|mailto:)", target) or target.startswith("#"):
      continue
    path = target.split("#", 1)[0]
    if not (page.parent / path).exists():
      broken.append(target)
  assert not broken, f"{_rel(page)} links to files that do not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_anchor_names_a_heading(page):
  broken = []
  for target in links(page.read_text()):
    if re.match(r"^(https?:|mailto:)", target) or "#" not in target:
      continue
    path, anchor = target.split("#", 1)
    file = (page.parent / path) if path else page
    if file.suffix == ".md" and file.is_file() and anchor not in anchors(file.read_text()):
      broken.append(target)
  assert not broken, f"{_rel(page)} links to headings that do not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_named_repository_path_exists(page):
  missing = sorted({path for path in repo_paths(page.read_text()) if not (REPO_ROOT / path).exists()})
  assert not missing, f"{_rel(page)} names paths that are not in the repository: {missing}"


def test_readme_is_a_front_page():
  size = len((REPO_ROOT / "README.md").read_text())
  assert size <= README_MAX_CHARS, f"README.md has {size} characters; move detail into docs/"


def test_the_layout_names_every_module_of_the_package():
  named = set(re.findall(r"`(jaxmnist/[\w/]+\.py)`", (REPO_ROOT / "docs" / "layout.md").read_text()))
  modules = {_rel(path) for path in (REPO_ROOT / "jaxmnist").glob("*.py") if path.name != "__init__.py"}
  assert named >= modules, f"docs/layout.md's table lacks {sorted(modules - named)}"


def test_the_docs_exist():
  names = {page.name for page in DOCS}
  assert {"data.md", "models.md", "results.md", "after-training.md", "serving.md", "hardware.md",
          "testing.md", "layout.md", "from-pytorch.md", "ensembles.md"} <= names


@pytest.mark.parametrize("page", DOCS, ids=_rel)
def test_each_page_opens_with_its_commands(page):
  text = page.read_text()
  first_section = re.search(r"^## ", text, re.M)
  head = text[:first_section.start()] if first_section else text
  assert re.search(r"^```bash\n.+?^```", head, re.S | re.M), \
      f"{_rel(page)} must open with a ```bash block of its commands before its first '## ' section"


# docs/from-pytorch.md

FROM_PYTORCH = REPO_ROOT / "docs" / "from-pytorch.md"


def marked_excerpts(text: str) -> list[tuple[str, list[str], str | None]]:
  """(file, names, the python excerpt after the marker or None) for every names marker."""
  found = []
  for marker in MARKER.finditer(text):
    names = [name.strip() for name in marker.group(2).split(",") if name.strip()]
    after = FENCE.match(text, re.match(r"\s*", text[marker.end():]).end() + marker.end())
    excerpt = after.group(3) if after and after.group(2).strip() == "python" else None
    found.append((marker.group(1), names, excerpt))
  return found


def top_level_names(source: str) -> set[str]:
  names = set()
  for node in ast.parse(source).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, ast.Assign):
      names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      names.add(node.target.id)
  return names


def _normalised(lines) -> list[str]:
  return [" ".join(line.split()) for line in lines if line.strip()]


def excerpt_in_source(excerpt: str, source: str) -> bool:
  """Whether the excerpt's lines appear in the source in order, consecutively between `...` lines."""
  source_lines = _normalised(source.splitlines())
  chunks, chunk = [], []
  for line in _normalised(excerpt.splitlines()):
    if line == "...":
      chunks, chunk = chunks + [chunk] if chunk else chunks, []
    else:
      chunk.append(line)
  chunks += [chunk] if chunk else []
  position = 0
  for chunk in chunks:
    for start in range(position, len(source_lines) - len(chunk) + 1):
      if source_lines[start:start + len(chunk)] == chunk:
        position = start + len(chunk)
        break
    else:
      return False
  return bool(chunks)


_EXCERPTS = marked_excerpts(FROM_PYTORCH.read_text())


def test_excerpt_matcher_allows_skips_and_refuses_changes():
  source = "def f(x):\n  y = x + 1\n\n  z = y * 2\n  return z\n"
  assert excerpt_in_source("def f(x):\n  ...\n  return   z\n", source)
  assert excerpt_in_source("  y = x + 1\n  z = y * 2\n", source)  # a blank line in the file is no gap
  assert not excerpt_in_source("  y = x + 2\n", source)
  assert not excerpt_in_source("  return z\n...\n  y = x + 1\n", source)  # order counts
  assert not excerpt_in_source("def f(x):\n  return z\n", source)  # skipped lines need a `...`


def test_from_pytorch_marks_its_jaxmnist_excerpts():
  excerpts = _EXCERPTS
  assert len(excerpts) >= 7, "each piece of the post needs the jaxmnist code beside it"
  assert all(excerpt is not None for _, _, excerpt in excerpts), "every marker must head a ```python block"


@pytest.mark.parametrize("file,names,excerpt", _EXCERPTS,
                         ids=[f"{i}-{file}:{','.join(names)}" for i, (file, names, _) in enumerate(_EXCERPTS)])
def test_from_pytorch_names_and_excerpts_match_the_code(file, names, excerpt):
  path = REPO_ROOT / file
  assert path.is_file(), f"docs/from-pytorch.md names {file}, which does not exist"
  source = path.read_text()
  missing = sorted(set(names) - top_level_names(source))
  assert not missing, f"{file} has no top-level {missing}"
  assert excerpt is not None and excerpt_in_source(excerpt, source), \
      f"this excerpt is not copied from {file} (whitespace aside; `...` skips lines):\n{excerpt}"


def test_from_pytorch_takes_the_posts_pieces_in_order():
  text = FROM_PYTORCH.read_text()
  positions = [text.find(piece) for piece in POST_PIECES]
  assert all(position >= 0 for position in positions), \
      f"not mentioned: {[piece for piece, position in zip(POST_PIECES, positions) if position < 0]}"
  assert positions == sorted(positions), f"the post's pieces must come in its order: {POST_PIECES}"
