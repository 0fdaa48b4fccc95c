"""`jaxmnist serve` as a user starts it, for the tests and experiments: a subprocess on a free loopback port.

Synopsis:
  from tests import serving
  run_dir = tiny_cli_run.run_dir                               # tests/conftest.py's session run
  with serving.Server(run_dir, cache_dir=tmp_path / "cache") as server:
    status, answer = server.post("/api/predict", png_bytes, "image/png")
    serving.draw(page, serving.SEVEN)                          # a Playwright page showing server.url

Shared by tests/test_serve.py, tests/test_browser.py, experiments/serve_load.py and
experiments/serve_screenshot.py, so they all meet the server the same way: `--port 0`, then the URL it
prints.
"""

import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180  # loading and compiling on a busy 2-core machine
CANVAS = 280  # the page's canvas side, in pixels
PEN = 20  # the page's pen width
VIEWPORT = {"width": 720, "height": 440}  # the browser window the tests open the page in

# Strokes in canvas pixels, as a person draws them: a 7 (a bar, then the stem), a 1, and a 0.
SEVEN = [[(70, 60), (210, 60), (120, 240)]]
ONE = [[(140, 40), (140, 240)]]
ZERO = [[(140, 40), (200, 80), (215, 140), (200, 200), (140, 240), (80, 200), (65, 140), (80, 80), (140, 40)]]


def drawing(strokes=SEVEN, image_format="PNG", size=CANVAS) -> bytes:
  """Strokes drawn in black on a white canvas, encoded as the page's canvas would send them."""
  canvas = Image.new("L", (size, size), 255)
  pen = ImageDraw.Draw(canvas)
  for stroke in strokes:
    pen.line(stroke, fill=0, width=PEN, joint="curve")
  buffer = io.BytesIO()
  canvas.save(buffer, format=image_format)
  return buffer.getvalue()


class Server:
  """`python -m jaxmnist.cli serve RUN_DIR --port 0` in a subprocess; the URL is read from what it prints."""

  def __init__(self, run_dir, cache_dir, *extra_args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXMNIST_CACHE_DIR": str(cache_dir),
           "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    self.command = [sys.executable, "-m", "jaxmnist.cli", "serve", str(run_dir), "--port", "0", *extra_args]
    self.process = subprocess.Popen(self.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
    self.stdout, self.stderr = [], []
    self._url_found = threading.Event()
    threading.Thread(target=self._drain, args=(self.process.stdout, self.stdout), daemon=True).start()
    threading.Thread(target=self._drain, args=(self.process.stderr, self.stderr), daemon=True).start()
    if not self._url_found.wait(START_TIMEOUT_S) or self.process.poll() is not None:
      self.stop()
      raise RuntimeError(f"`{' '.join(self.command)}` did not start:\n{''.join(self.stderr)}")
    self.url = re.search(r"open (http://\S+)", "".join(self.stdout)).group(1)
    self.host, self.port = re.match(r"http://(.+):(\d+)/", self.url).groups()
    self.port = int(self.port)

  def _drain(self, stream, lines):  # reads to the end, so the server never blocks on a full pipe
    for line in stream:
      lines.append(line)
      if line.startswith("open http://"):
        self._url_found.set()
    self._url_found.set()  # the process ended: stop waiting

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.stop()

  def stop(self) -> int:
    """Ctrl-C, as a user stops it; returns the exit code."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGINT)
      try:
        self.process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    return self.process.returncode

  def connection(self, timeout=60) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

  def request(self, method, path, body=None, headers=None, connection=None):
    """(status, headers, body bytes) of one request, on a new connection unless one is given."""
    own = connection is None
    connection = connection or self.connection()
    try:
      connection.request(method, path, body=body, headers=headers or {})
      response = connection.getresponse()
      return response.status, dict(response.getheaders()), response.read()
    finally:
      if own:
        connection.close()

  def get(self, path):
    status, _, body = self.request("GET", path)
    return status, json.loads(body)

  def post(self, path, body, content_type=None, connection=None):
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, reply = self.request("POST", path, body, headers, connection)
    return status, json.loads(reply)


def draw(page, strokes, pause_ms=0, steps=4):
  """Draws strokes on the page's canvas with the mouse, pausing between moves as a hand would."""
  box = page.locator("#pad").bounding_box()
  scale = box["width"] / CANVAS
  to_page = lambda point: (box["x"] + point[0] * scale, box["y"] + point[1] * scale)
  for stroke in strokes:
    page.mouse.move(*to_page(stroke[0]))
    page.mouse.down()
    for point in stroke[1:]:
      page.mouse.move(*to_page(point), steps=steps)
      if pause_ms:
        page.wait_for_timeout(pause_ms)
    page.mouse.up()


def wait_until_idle(page, timeout_ms=30_000):
  """Waits until the page has an answer for its drawing as it now is: nothing in flight or pending."""
  page.wait_for_function("() => !window.jaxmnist.busy()", timeout=timeout_ms)


def probabilities(page) -> list[float]:
  """The ten probabilities the page shows, read from the bars' data attributes."""
  return page.eval_on_selector_all("#bars .row", "rows => rows.map(row => Number(row.dataset.probability))")


# Paints MNIST digits on the page's canvas, black ink on white as the pen draws (bilinear, 10x), and
# asks the page's own predict(): the browser encodes the canvas with toBlob, as for a person's drawing.
PAINT_AND_PREDICT = """async (digits) => {
  const {pad, clear, predict} = window.jaxmnist;
  const ink = pad.getContext("2d");
  const field = document.createElement("canvas");
  field.width = field.height = 28;
  const fieldInk = field.getContext("2d");
  const answers = [];
  for (const pixels of digits) {
    clear();
    const image = fieldInk.createImageData(28, 28);
    pixels.forEach((v, i) => image.data.set([255 - v, 255 - v, 255 - v, 255], 4 * i));
    fieldInk.putImageData(image, 0, 0);
    ink.imageSmoothingEnabled = true;
    ink.drawImage(field, 0, 0, pad.width, pad.height);
    answers.push((await predict()).digit);
  }
  return answers;
}"""


def chromium_path() -> str | None:
  """The system's chromium, which Playwright drives (its own browser download is not used)."""
  return shutil.which("chromium") or next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                                           if os.access(p, os.X_OK)), None)


def is_snap_shim(path) -> bool:
  """Ubuntu's chromium package installs a script that only asks for the snap: no browser to drive."""
  try:
    head = Path(path).read_bytes()[:4096]
  except OSError:
    return False
  return head.startswith(b"#!") and b"snap" in head


def launch_chromium(playwright, config_dir: Path):
  """The system's chromium, headless, keeping its configuration (crash reports) in `config_dir`, not ~/.config."""
  return playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                    env={**os.environ, "XDG_CONFIG_HOME": str(config_dir)})


def read_digits(page, images_Nx28x28, batch: int = 50) -> list[int]:
  """What the page's predict() answers for each MNIST image painted on its canvas, `batch` per call."""
  images = np.asarray(images_Nx28x28).reshape(len(images_Nx28x28), -1).tolist()
  answers = []
  for start in range(0, len(images), batch):
    answers += page.evaluate(PAINT_AND_PREDICT, images[start:start + batch])
  return answers
