"""`jaxmnist serve`'s page in a real browser: Playwright driving the system's chromium (headless).

Drawing with the mouse must bring the ten probabilities while the stroke is still being drawn, Clear
must empty them, and a different drawing must change them. The whole path (the browser's own
canvas.toBlob PNG, the upload, the shared preprocessing, the model) must read 200 real MNIST test
digits painted on the page's canvas as well as the model reads MNIST itself.

Skips, saying why, where Playwright or chromium is missing (`.ci/run` installs chromium as root; on
Debian or Ubuntu: apt-get install chromium). Playwright's own browser download is not used.
"""

import dataclasses

import numpy as np
import pytest

from tests import serving, training_outcomes

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'")
pytest.importorskip("starlette", reason="`jaxmnist serve` needs pip install -e '.[serve]' (or '.[test]')")


def test_ubuntus_snap_shim_is_told_apart_from_a_browser(tmp_path):
  shim = tmp_path / "chromium-browser"
  shim.write_text('#!/bin/sh\necho "Command \'/usr/bin/chromium-browser\' requires the chromium snap to be '
                  'installed. Please install it with: snap install chromium"\nexit 1\n')
  assert serving.is_snap_shim(shim)
  launcher = tmp_path / "chromium"  # Debian's /usr/bin/chromium: a shell script that starts the browser
  launcher.write_text('#!/bin/sh\nexec /usr/lib/chromium/chromium "$@"\n')
  assert not serving.is_snap_shim(launcher)
  binary = tmp_path / "chrome"  # a browser binary, whatever its bytes hold further on
  binary.write_bytes(b"\x7fELF" + b"\0" * 64 + b"snap")
  assert not serving.is_snap_shim(binary) and not serving.is_snap_shim(tmp_path / "missing")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  executable = serving.chromium_path()
  if executable is None:
    pytest.skip("chromium is not installed (Debian/Ubuntu: apt-get install chromium; .ci/run does it as root)")
  if serving.is_snap_shim(executable):
    pytest.skip(f"{executable} is Ubuntu's placeholder that asks for the chromium snap, which Playwright cannot "
                f"drive: install a real chromium (Debian's package, or `snap install chromium` and put it on PATH)")
  with sync_api.sync_playwright() as playwright:
    launched = serving.launch_chromium(playwright, tmp_path_factory.mktemp("chromium-config"))
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def fashion_ensemble_server(browser, tmp_path_factory):
  """`jaxmnist serve` of one run that is both a Fashion-MNIST run and an ensemble (`tiny`, seeds 0 and 3, on the
  toy set labelled as Fashion-MNIST), trained in this process: one server for the tests of both pages.
  (Asks for `browser` first, so that where there is none nothing is trained or started.)"""
  from jaxmnist import train  # pylint: disable=g-import-not-at-top
  from jaxmnist.configs import PRESETS  # pylint: disable=g-import-not-at-top

  tmp = tmp_path_factory.mktemp("fashion-ensemble")
  config = dataclasses.replace(PRESETS["tiny"], dataset="fashion_mnist", seeds=(0, 3))
  mnist = dataclasses.replace(training_outcomes.tiny_mnist(), dataset="fashion_mnist")
  train.train_and_evaluate(config, tmp / "run", mnist, progress=False)
  with serving.Server(tmp / "run", tmp / "cache") as server:
    yield server


@pytest.fixture(scope="module")
def cnn_server(browser, cnn_run, real_cache_dir):
  with serving.Server(cnn_run[0], real_cache_dir) as server:
    yield server


@pytest.fixture
def open_page(browser):
  """Opens a server's page; fails the test on any script error or request to another origin."""
  pages, problems = [], []

  def open_(server):
    page = browser.new_page(viewport=serving.VIEWPORT)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("request", lambda request: None if request.url.startswith((server.url, "data:"))
            else problems.append(f"request elsewhere: {request.url}"))
    page.goto(server.url)
    page.wait_for_function("() => document.getElementById('about').textContent !== ''")  # health answered
    pages.append(page)
    return page

  yield open_
  for page in pages:
    page.close()
  assert not problems


def predictions(page) -> int:
  return int(page.get_attribute("#bars", "data-predictions"))


def test_drawing_shows_probabilities_while_drawing_and_clear_resets_them(cnn_server, open_page):
  page = open_page(cnn_server)
  box = page.locator("#pad").bounding_box()
  page.mouse.move(box["x"] + 140, box["y"] + 40)
  page.mouse.down()
  for y in range(60, 260, 20):  # a slow vertical stroke, about 1 s: answers arrive before the pen lifts
    page.mouse.move(box["x"] + 140, box["y"] + y, steps=3)
    page.wait_for_timeout(100)
  page.wait_for_function("() => Number(document.getElementById('bars').dataset.predictions) > 0", timeout=10_000)
  page.mouse.up()
  serving.wait_until_idle(page)
  first = np.array(serving.probabilities(page))
  assert first.shape == (10,) and abs(first.sum() - 1) < 1e-3
  assert int(page.get_attribute("#guess", "data-digit")) == int(np.argmax(first))
  assert page.evaluate("() => document.getElementById('seen').getContext('2d')"
                       ".getImageData(0, 0, 28, 28).data.some((v, i) => i % 4 < 3 && v > 0)")  # what it saw

  page.click("#clear")
  assert serving.probabilities(page) == [0] * 10
  assert page.get_attribute("#bars", "data-state") == "idle"

  serving.draw(page, serving.ZERO)
  serving.wait_until_idle(page)
  second = np.array(serving.probabilities(page))
  assert abs(second.sum() - 1) < 1e-3
  assert np.abs(second - first).max() > 0.01, (first, second)  # another shape, another answer
  assert page.get_attribute("#bars", "data-state") == "done"


def test_a_fashion_run_labels_its_bars_and_guess_with_class_names(fashion_ensemble_server, open_page):
  page = open_page(fashion_ensemble_server)
  names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
  assert page.locator("#bars .row .name").all_text_contents() == names
  assert page.text_content("#title") == "Draw a piece of clothing"
  assert "on Fashion-MNIST's test set" in page.text_content("#about")
  serving.draw(page, serving.ZERO)
  serving.wait_until_idle(page)
  assert page.text_content("#guess") == names[int(page.get_attribute("#guess", "data-digit"))]
  for label in page.locator("#bars .row .name").all():  # "T-shirt/top" and "Ankle boot" fit, not cut off
    assert label.evaluate("e => e.scrollWidth <= e.clientWidth"), label.text_content()


def test_an_ensembles_page_says_how_many_members_agree(fashion_ensemble_server, open_page):
  page = open_page(fashion_ensemble_server)
  assert "Model: an ensemble of 2 x mlp3" in page.text_content("#about")
  serving.draw(page, serving.SEVEN)
  serving.wait_until_idle(page)
  answer = page.evaluate("() => window.jaxmnist.predict()")  # the drawing's answer, as the page gets it
  assert answer["members"] == 2 and 0 <= answer["members_agreeing"] <= 2
  assert page.text_content("#agreement") == f"{answer['members_agreeing']} of 2 members agree"
  page.click("#clear")
  assert page.text_content("#agreement") == ""


def test_200_mnist_digits_painted_through_the_page_are_read_correctly(cnn_server, open_page, real_mnist):
  page = open_page(cnn_server)
  accuracy = training_outcomes.browser_digits_accuracy(page, real_mnist)
  print(f"browser path (canvas.toBlob PNG -> POST /api/predict): {accuracy:.3f} of "
        f"{training_outcomes.NUM_BROWSER_DIGITS} MNIST test digits")
  training_outcomes.assert_clears("real_cnn", {"browser_accuracy": accuracy})


def test_a_digit_drawn_with_the_mouse_is_read_and_can_be_screenshot(cnn_server, open_page, tmp_path):
  page = open_page(cnn_server)
  seven = training_outcomes.drawn_seven_probability(page)  # draws a 7
  training_outcomes.assert_clears("real_cnn", {"drawn_seven_probability": seven})  # so 7 is the guess
  shown = serving.probabilities(page)
  assert page.get_attribute("#guess", "data-digit") == str(int(np.argmax(shown))) == "7"
  path = tmp_path / "serve.png"
  page.screenshot(path=str(path))
  assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5_000
