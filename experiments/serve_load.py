"""Load check of `jaxmnist serve`: 1,000 requests, 4 at a time, one in ten malformed; latency and errors.

Synopsis:
  jaxmnist train --model=cnn --workdir=runs/cnn --no-progress      # ~1-2 minutes on a 2-core CPU
  python experiments/serve_load.py runs/cnn                         # writes results/serve_load.md

Starts `jaxmnist serve RUN_DIR --port 0` as a user would, times its start and its first request (a
drawing sent alone, right after the URL is printed), then sends --requests requests from --concurrency
threads, each on its own keep-alive connection (http.client). The valid bodies are real MNIST test
digits drawn 10x larger, black on white on a 280x280 canvas like the page's, as PNG (and every fifth
as JPEG). Every tenth request is malformed, in turn: not an image, an empty body, text/plain, a body
over the 2 MB limit, a blank white canvas; each must get its 4xx. Errors are 5xx answers, connection
errors, and any other status than the one expected. Then /api/health must still answer.

Targets on a 2-core CPU: p50 under 20 ms for the valid requests, and no errors. Runtime: about 20 s.

Measured on the shared 2-core AMD EPYC (results/serve_load.md, a `cnn` run), 2026-12-01 at load
average 3.8-4.7: no errors, every malformed body its 4xx, 900 of 900 digits right; 4 at a time, one
process 239-255 requests a second at p50 16-17 ms. The server spends ~4-5 ms of CPU per request
(preprocess.to_mnist ~3 ms, the forward pass 0.3 ms, HTTP and Starlette most of the rest, by py-spy).
A second process on the same port (the `--workers` option of before) served 1.04-2.3x as many, 1.2x in
the median of four pairs on 2026-12-03 at load 4-8 (one process 97, 114, 102, 130 a second; two 114, 125,
232, 135; a `linear` run, --requests=600), and took 1.5-3x as long to start (each imports jax and restores).
"""

import argparse
import concurrent.futures
import datetime
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jaxmnist import data, serve  # noqa: E402
from experiments import provenance  # noqa: E402
from tests import serving  # noqa: E402

MALFORMED_EVERY = 10
POOL = 200  # distinct valid bodies, cycled


def canvas_bodies(images_Nx28x28: np.ndarray) -> list[tuple[bytes, str]]:
  """MNIST digits as the page's canvas would send them: 280x280, black on white; every fifth as JPEG."""
  bodies = []
  for i, image in enumerate(images_Nx28x28):
    canvas = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BILINEAR)
    image_format, content_type = ("JPEG", "image/jpeg") if i % 5 == 4 else ("PNG", "image/png")
    buffer = io.BytesIO()
    canvas.save(buffer, format=image_format)
    bodies.append((buffer.getvalue(), content_type))
  return bodies


def malformed_bodies() -> list[tuple[str, bytes, str, int]]:
  """(name, body, content type, expected status), one of each kind."""
  return [("not an image", b"this is not a picture", "image/png", 400),
          ("empty", b"", "image/png", 400),
          ("text/plain", serving.drawing(), "text/plain", 415),
          ("oversize", b"\x89PNG\r\n\x1a\n" + b"\0" * serve.MAX_BODY_BYTES, "image/png", 413),
          ("blank", serving.drawing(strokes=[]), "image/png", 422)]


def plan(count: int, valid, labels, malformed) -> list[tuple]:
  """Request i: a malformed body every MALFORMED_EVERY-th, else the next valid one (with its label)."""
  requests, bad_index = [], 0
  for i in range(count):
    if i % MALFORMED_EVERY == MALFORMED_EVERY - 1:
      name, body, content_type, expected = malformed[bad_index % len(malformed)]
      bad_index += 1
      requests.append((name, body, content_type, expected, None))
    else:
      body, content_type = valid[i % len(valid)]
      requests.append(("valid", body, content_type, 200, int(labels[i % len(valid)])))
  return requests


class Client:
  """One keep-alive connection per thread, reopened after a connection error."""

  def __init__(self, server):
    self.server, self.local = server, threading.local()

  def send(self, request) -> dict:
    name, body, content_type, expected, label = request
    connection = getattr(self.local, "connection", None) or self.server.connection(timeout=30)
    self.local.connection = connection
    start = time.perf_counter()
    try:
      status, _, reply = self.server.request("POST", "/api/predict", body, {"Content-Type": content_type},
                                             connection)
    except OSError as error:
      connection.close()
      self.local.connection = None
      return {"name": name, "status": None, "error": repr(error), "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    correct = None
    if status == 200 and label is not None:
      correct = json.loads(reply)["digit"] == label
    return {"name": name, "status": status, "expected": expected, "seconds": seconds, "correct": correct,
            "error": None if status == expected else f"status {status}, expected {expected}: {reply[:200]!r}"}


def percentile_ms(results, q) -> float:
  return 1000 * float(np.percentile([r["seconds"] for r in results], q))


def send_all(client, requests, concurrency) -> tuple[list[dict], float]:
  begin = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    results = list(pool.map(client.send, requests))
  return results, time.perf_counter() - begin


def latency_line(results, wall) -> str:
  ok = [r for r in results if r["name"] == "valid" and r["status"] == 200]
  p50, p90, p99 = (percentile_ms(ok, q) for q in (50, 90, 99))
  return (f"{len(results)} requests in {wall:.1f} s ({len(results) / wall:.0f} per "
          f"second); the {len(ok)} valid ones: p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
          f"max {1000 * max(r['seconds'] for r in ok):.1f} ms")


def run(args) -> tuple[list[str], bool]:
  mnist = data.load_mnist(cache_dir=args.cache_dir)
  images, labels = mnist.test_images[:POOL, ..., 0], mnist.test_labels[:POOL]
  valid, malformed = canvas_bodies(images), malformed_bodies()
  requests = plan(args.requests, valid, labels, malformed)
  load_before = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as xla_cache:
    start = time.perf_counter()
    with serving.Server(args.run_dir, xla_cache) as server:
      started = time.perf_counter() - start
      client = Client(server)
      first = client.send(requests[0])
      results, wall = send_all(client, requests, args.concurrency)
      one_by_one, one_by_one_wall = send_all(client, requests[:args.sequential], 1)
      health_status, health = server.get("/api/health")
      server_log = "".join(server.stderr)
  ok = [r for r in results if r["name"] == "valid" and r["status"] == 200]
  errors = [r for r in results + one_by_one if r["error"]]
  crashes = [r for r in results + one_by_one if r["status"] is None or r["status"] >= 500]
  counts = {name: sum(r["name"] == name for r in results) for name in dict.fromkeys(r["name"] for r in results)}
  p50 = percentile_ms(ok, 50)
  clean = not errors and health_status == 200 and "Traceback" not in server_log
  lines = [
      f"# `jaxmnist serve` under load ({datetime.date.today()}, {provenance.cpu_name()}, {os.cpu_count()} cores)", "",
      f"Command: `python experiments/serve_load.py RUN_DIR --requests={args.requests} "
      f"--concurrency={args.concurrency}`, RUN_DIR a `{health['model']}` run (checkpoint of epoch "
      f"{health['checkpoint_epoch']}, test accuracy {health['test_accuracy']}); server and client on the same "
      f"machine, over loopback. Load average when it started: {load_before:.1f} (this machine is shared).", "",
      f"- start-up (`jaxmnist serve` until it prints the URL: imports, checkpoint, compile, warm-up): {started:.1f} s",
      f"- first request, sent alone right after start-up: {1000 * first['seconds']:.1f} ms (status {first['status']})",
      f"- {args.concurrency} at a time: {latency_line(results, wall)}",
      f"- one at a time, the first {args.sequential} of the same requests: {latency_line(one_by_one, one_by_one_wall)}",
      "- mix: " + ", ".join(f"{n} {name}" for name, n in counts.items()),
      f"- digits read correctly: {sum(bool(r['correct']) for r in ok)} of {len(ok)}",
      f"- malformed requests answered with their 4xx: "
      f"{sum(r['name'] != 'valid' and r['status'] == r['expected'] for r in results)} of "
      f"{sum(r['name'] != 'valid' for r in results)} ("
      + ", ".join(f"{name} {expected}" for name, _, _, expected in malformed) + ")",
      f"- errors (5xx, connection errors, unexpected statuses): {len(errors)} (5xx or connection errors: "
      f"{len(crashes)})",
      f"- /api/health afterwards: {health_status}; tracebacks in the server's log: "
      f"{server_log.count('Traceback')}", "",
      f"Targets: no errors: {'met' if clean else 'MISSED'}; p50 under {args.target_p50_ms:.0f} ms with "
      f"{args.concurrency} at a time: {'met' if p50 < args.target_p50_ms else 'MISSED'} ({p50:.1f} ms).",
  ]
  lines += [f"  error: {r['name']}: {r['error']}" for r in errors[:10]]
  return lines, clean and p50 < args.target_p50_ms


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("run_dir")
  parser.add_argument("--requests", type=int, default=1000)
  parser.add_argument("--concurrency", type=int, default=4)
  parser.add_argument("--sequential", type=int, default=200, help="then this many one at a time")
  parser.add_argument("--target-p50-ms", type=float, default=20.0)
  parser.add_argument("--cache-dir", help="where MNIST is cached (default: jaxmnist's)")
  parser.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results" / "serve_load.md"))
  args = parser.parse_args()
  lines, passed = run(args)
  text = "\n".join(lines) + "\n"
  print(text)
  Path(args.out).write_text(text)
  sys.exit(0 if passed else 1)


if __name__ == "__main__":
  main()
