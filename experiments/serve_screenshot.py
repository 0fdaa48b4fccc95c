"""A screenshot of `jaxmnist serve`'s page with a digit drawn by the mouse and the model's answer showing.

Synopsis:
  jaxmnist train --model=cnn --workdir=runs/cnn --no-progress         # ~1-2 minutes on a 2-core CPU
  python experiments/serve_screenshot.py runs/cnn                      # writes results/serve_screenshot.png

Starts the server on a free loopback port, opens the page in the system's chromium (headless, through
Playwright: pip install -e '.[test]'; apt-get install chromium), draws a 7 with the mouse as a hand
would, waits for the answer to the finished drawing and saves the page. About 10 s.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests import serving  # noqa: E402

VIEWPORT = {"width": 720, "height": 440}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("run_dir")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results" / "serve_screenshot.png"))
  args = parser.parse_args()
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as cache, serving.Server(args.run_dir, cache) as server, \
       sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(server.url)
    page.wait_for_function("() => document.getElementById('about').textContent !== ''")
    serving.draw(page, serving.SEVEN, pause_ms=30)
    serving.wait_until_idle(page)
    page.screenshot(path=args.out)
    print(f"{args.out}: the page reads the drawing as {page.get_attribute('#guess', 'data-digit')}, "
          f"probabilities {[round(p, 3) for p in serving.probabilities(page)]}")
    browser.close()


if __name__ == "__main__":
  main()
