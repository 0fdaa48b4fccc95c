"""`jaxmnist serve RUN_DIR`: draw a digit in the browser and watch the run's model read it as you draw.

Synopsis:
  jaxmnist serve runs/cnn-20261127-120000               # then open the URL it prints
  jaxmnist serve runs/cnn-20261127-120000 --port 0      # any free port; the printed URL says which
  curl -s -H 'Content-Type: image/png' --data-binary @digit.png http://127.0.0.1:8000/api/predict
  curl -s http://127.0.0.1:8000/api/health

Three fixed routes and nothing else:
  GET  /             the page (jaxmnist/web/index.html, package data): a canvas for mouse, finger or
                     pen, the ten probabilities as bars that follow the drawing, and the 28x28 image
                     that the model was given.
  POST /api/predict  a PNG or JPEG body -> {"digit" (the class index), "class" (its name), "probabilities",
                     "image" (28 rows of 28 ints), "ms"}; an ensemble's run adds "members" and
                     "members_agreeing" (how many members pick that class). The picture goes
                     through `preprocess.to_mnist`, as in `jaxmnist predict`.
  GET  /api/health   the model, run directory, checkpoint epoch, summary.json's test accuracy, and the run's
                     dataset with its class names (the page labels its bars with them).

Why Starlette on uvicorn (`pip install 'jaxmnist[serve]'`): two endpoints that take raw bytes and
return JSON need routing, a request stream and a server; that is what these two small, well-kept
packages are. FastAPI is Starlette plus pydantic validation and generated OpenAPI docs, and neither
helps with an image body: it would add a large dependency and no behaviour.

Why a threadpool: preprocessing (Pillow, numpy) and the forward pass hold a CPU for 5-10 ms, which
would stall the event loop and with it every other request, the health check and the 413s for
oversized bodies included. `run_in_threadpool` keeps the loop free. A jitted function may be called
from several threads at once, so no lock is needed. More threads do not mean more throughput here
(preprocessing holds the GIL for much of its time: on 2 cores, 4 threads served 107 drawings a
second and 1 thread 121), but neither does a lock help, and the loop stays responsive.

Why `--workers N`: one process runs Python for one request at a time (the GIL), and a request holds it
for most of its ~5 ms (decoding, preprocessing, HTTP). N - 1 more processes, each with its own copy of
the model, accept connections from the same listening socket, so N requests run at once on N cores;
on the 2-core EPYC with the load client beside it, 2 workers answered 4 at a time 1.2-1.4x as fast as 1
(experiments/serve_load.py). Batching requests that arrive together would save less: the forward
pass of one drawing takes 0.3 ms. Each extra worker watches this process and stops when it ends.

Safe by default: it listens on 127.0.0.1 and then answers only Host headers that name the loopback
(a web page elsewhere cannot reach it by DNS rebinding); bodies are capped at MAX_BODY_BYTES, by their
Content-Length and again by the bytes that actually arrive; a body must be what its Content-Type says
(PNG or JPEG, by its first bytes), so only those two decoders ever see it; preprocessing refuses
pictures of too many pixels before decoding them; every refusal is a 4xx with {"error": "..."}; no part
of a request names a file.
"""

import argparse
import contextlib
import importlib.resources
import importlib.util
import io
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from jaxmnist import data, datasets, interpret, predict, preprocess, process, runs, train_state
from jaxmnist.errors import UserError

MAX_BODY_BYTES = 2 * 2**20  # a 280x280 canvas PNG takes 5-15 kB; a cropped photo of a digit fits too
IMAGE_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
PAGE = "web/index.html"
# The page loads nothing from elsewhere; this header makes the browser hold it to that.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# uint8 [1, 28, 28, 1] -> (probabilities [C], how many of an ensemble's members agree, or None)
Forward = Callable[[np.ndarray], tuple]


class Refusal(Exception):
  """A request the server turns down: the HTTP status and the message for {"error": ...}."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


# The model.

def make_forward(trained: train_state.Trained) -> Forward:
  """Softmax probabilities of one uint8 image (and an ensemble's agreeing members): `jaxmnist predict`'s
  computation, jitted once at start-up and reused, so no request traces or compiles."""
  outputs_of = predict.outputs_fn(trained)

  def forward(image_1xHxWxC):
    probabilities_NxC, agreeing_N = outputs_of(image_1xHxWxC)
    return probabilities_NxC[0], None if agreeing_N is None else int(agreeing_N[0])
  return forward


def sample_drawings() -> list[bytes]:
  """A stroke on a white canvas, as PNG and as JPEG: start-up warms every step of a request with them."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  canvas = Image.new("L", (280, 280), 255)
  ImageDraw.Draw(canvas).line([(140, 40), (140, 240)], fill=0, width=20)
  encoded = []
  for image_format in ("PNG", "JPEG"):
    buffer = io.BytesIO()
    canvas.save(buffer, format=image_format)
    encoded.append(buffer.getvalue())
  return encoded


def predict_picture(body: bytes, forward: Forward, class_names=interpret.DIGITS, members: int = 0) -> dict:
  """The reply to one picture; Refusal(422) when preprocessing turns it down (damaged, blank, huge).
  An ensemble's (`members` > 0) also says how many members pick the answer's class."""
  start = time.perf_counter()
  try:
    digit_HxWxC = preprocess.to_mnist(body, name="the uploaded image")
  except UserError as error:
    raise Refusal(422, str(error)) from None
  probabilities_C, agreeing = forward(digit_HxWxC[None])
  top = int(np.argmax(probabilities_C))
  agreement = {"members": members, "members_agreeing": agreeing} if members else {}
  return {"digit": top, "class": class_names[top],
          "probabilities": [round(float(p), 6) for p in probabilities_C],
          "image": digit_HxWxC[..., 0].tolist(), **agreement,
          "ms": round(1000 * (time.perf_counter() - start), 2)}


def health(trained: train_state.Trained) -> dict:
  summary = runs.read_summary(trained.run_dir) or {}
  dataset = datasets.get(trained.config.dataset)
  return {"status": "ok", "model": trained.config.model, "run_dir": str(trained.run_dir),
          "checkpoint_epoch": trained.epoch, "test_accuracy": summary.get("test_accuracy"),
          "checkpoint": trained.checkpoint_line, "dataset": dataset.name, "dataset_title": dataset.title,
          "members": len(trained.seeds),  # 0: one model; else an ensemble of that many
          "class_names": list(dataset.class_names)}


# What a request must be.

def image_type(content_type: str | None) -> str:
  """The body's media type, image/png or image/jpeg; Refusal(415) for anything else."""
  media_type = (content_type or "").split(";", 1)[0].strip().lower()
  if media_type not in IMAGE_SIGNATURES:
    raise Refusal(415, f"Content-Type {media_type or '(none)'} is not accepted: send the picture as image/png "
                  f"or image/jpeg (a canvas's toBlob gives image/png).")
  return media_type


def check_signature(body: bytes, media_type: str) -> None:
  """Refusal(400) unless the body starts as its media type says, so only that decoder ever reads it."""
  if not body:
    raise Refusal(400, "The body is empty: send the picture's PNG or JPEG bytes.")
  if not body.startswith(IMAGE_SIGNATURES[media_type]):
    raise Refusal(400, f"The body is not {media_type.split('/')[1].upper()} data, as its Content-Type "
                  f"{media_type} says. Send a PNG or JPEG picture of one digit.")


def declared_length(content_length: str | None, limit: int) -> None:
  """Refusal(413) for a Content-Length over the limit, before a byte of the body is read."""
  if content_length is None:
    return
  try:
    length = int(content_length)
  except ValueError:
    raise Refusal(400, f"Content-Length {content_length!r} is not a number.") from None
  if length > limit:
    raise Refusal(413, _too_large(limit))


def _too_large(limit: int) -> str:
  return (f"The body is larger than {limit // 2**20} MB, the most this server reads. A drawing takes a few "
          f"kB: shrink the picture and retry.")


async def read_body(request, limit: int = MAX_BODY_BYTES) -> bytes:
  """The request body, counted as it arrives: a missing or false Content-Length cannot pass the limit."""
  declared_length(request.headers.get("content-length"), limit)
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise Refusal(413, _too_large(limit))
    chunks.append(chunk)
  return b"".join(chunks)


# The application.

def build_app(trained: train_state.Trained, forward: Forward, page: bytes, trusted_hosts=None,
              on_ready: Callable[[], None] = lambda: None):
  """The Starlette app: three fixed routes; every error a JSON {"error": ...}.

  Its start-up runs sample drawings through the whole prediction path, threadpool included: the jit
  compiles and anyio starts its worker thread (about 0.1 s the first time) before any request comes.
  """
  # pylint: disable=g-import-not-at-top
  from starlette.applications import Starlette
  from starlette.concurrency import run_in_threadpool
  from starlette.exceptions import HTTPException
  from starlette.middleware import Middleware
  from starlette.middleware.trustedhost import TrustedHostMiddleware
  from starlette.responses import JSONResponse, Response
  from starlette.routing import Route

  def reply(status: int, content: dict) -> JSONResponse:
    return JSONResponse(content, status, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

  async def index(_):
    return Response(page, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})

  class_names = datasets.get(trained.config.dataset).class_names
  members = len(trained.seeds)

  async def predict(request):
    try:
      media_type = image_type(request.headers.get("content-type"))
      body = await read_body(request)
      check_signature(body, media_type)
      return reply(200, await run_in_threadpool(predict_picture, body, forward, class_names, members))
    except Refusal as refusal:
      return reply(refusal.status, {"error": refusal.message})

  status = health(trained)  # summary.json is read once: a finished run does not change

  async def health_route(_):
    return reply(200, status)

  async def http_error(_, error: HTTPException):  # 404, 405: JSON like every other refusal
    return reply(error.status_code, {"error": f"{error.detail}. The routes are GET /, POST /api/predict and "
                                              f"GET /api/health."})

  async def server_error(_, error: Exception):  # a bug: say so without a traceback (the log has it)
    return reply(500, {"error": f"internal error ({type(error).__name__}); the server log has the details."})

  @contextlib.asynccontextmanager
  async def warm_up(_):
    for sample in sample_drawings():
      await run_in_threadpool(predict_picture, sample, forward)
    on_ready()
    yield

  middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(trusted_hosts))] if trusted_hosts else []
  routes = [Route("/", index, methods=["GET"]), Route("/api/predict", predict, methods=["POST"]),
            Route("/api/health", health_route, methods=["GET"])]
  return Starlette(routes=routes, middleware=middleware, lifespan=warm_up,
                   exception_handlers={HTTPException: http_error, Exception: server_error})


def page_bytes() -> bytes:
  return importlib.resources.files("jaxmnist").joinpath(PAGE).read_bytes()


def trusted_hosts_for(host: str) -> tuple[str, ...] | None:
  """The Host headers to answer: the loopback names when listening there, else any (the user chose)."""
  return LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else None


# Start-up.

def url_to_open(host: str, port: int) -> str:
  """The address a browser on this machine opens; a wildcard host is reached through the loopback."""
  shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
  if ":" in shown and not shown.startswith("["):
    shown = f"[{shown}]"
  return f"http://{shown}:{port}/"


def listen(host: str, port: int) -> socket.socket:
  """A listening socket, so that a busy port or a bad host is one clear message (and --port 0 works)."""
  if not 0 <= port <= 65535:
    raise UserError(f"--port {port} is not a port number: give one from 1 to 65535, or 0 for any free port.")
  try:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    listener = socket.socket(family, kind, proto)
  except (socket.gaierror, OSError) as error:
    raise UserError(f"--host {host} cannot be listened on ({error}). Leave --host out for 127.0.0.1.") from None
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
  try:
    listener.bind(address)
    listener.listen(128)  # browsers that connect while the model loads wait in the queue
  except OSError as error:
    listener.close()
    raise UserError(f"Cannot listen on {host}:{port}: {error.strerror}. Pick another --port (or --port 0 "
                    f"for any free one).") from None
  return listener


def require_installed() -> None:
  missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
  if missing:
    raise UserError(f"`jaxmnist serve` needs Starlette and uvicorn ({' and '.join(missing)} missing here): "
                    f"pip install 'jaxmnist[serve]'.")


def _uvicorn_server(app):
  import uvicorn  # pylint: disable=g-import-not-at-top

  return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", server_header=False))


def _worker(run_dir: str, host: str, listener: socket.socket, ready, parent_pid: int) -> None:
  """One more process answering on `listener` (`--workers`), with its own copy of the model; it tells
  `ready` once it is warm, and stops when the main process tells it (SIGTERM) or is gone."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the main process stops the workers
  process.enable_compilation_cache(data.default_cache_dir(), process.xla_cache_limit_bytes())
  trained = train_state.load_trained(Path(run_dir))  # the main process restored it already: it is sound
  server = _uvicorn_server(build_app(trained, make_forward(trained), page_bytes(), trusted_hosts_for(host),
                                     lambda: ready.put(os.getpid())))

  def watch_parent():  # killed outright (kill -9), the main process cannot stop its workers itself
    while os.getppid() == parent_pid:
      time.sleep(0.5)
    server.should_exit = True
  threading.Thread(target=watch_parent, daemon=True).start()
  server.run(sockets=[listener])


def start_workers(args: argparse.Namespace, listener: socket.socket) -> tuple[list, object]:
  """The `--workers` - 1 further processes (spawned: jax does not survive a fork), and their ready queue."""
  if args.workers == 1:
    return [], None  # no queue either: it would start multiprocessing's resource tracker process
  import multiprocessing  # pylint: disable=g-import-not-at-top

  context = multiprocessing.get_context("spawn")
  ready = context.Queue()
  workers = [context.Process(target=_worker, args=(str(args.run_dir), args.host, listener, ready, os.getpid()),
                             daemon=True) for _ in range(args.workers - 1)]
  for worker in workers:
    worker.start()
  return workers, ready


def wait_until_ready(workers: list, ready, timeout_s: float = 300) -> int:
  """How many workers came up: each says so once warm; one that ended at start-up is not waited for."""
  up, deadline = 0, time.monotonic() + timeout_s
  while up < sum(worker.is_alive() or worker.exitcode == 0 for worker in workers) and time.monotonic() < deadline:
    try:
      ready.get(timeout=0.2)
      up += 1
    except queue.Empty:
      pass
  return up


def stop_workers(workers: list) -> None:
  for worker in workers:
    if worker.is_alive():
      worker.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits
  for worker in workers:
    worker.join(timeout=10)


def main(args: argparse.Namespace) -> None:
  require_installed()
  if args.workers < 1:
    raise UserError(f"--workers {args.workers}: give 1 or more processes to answer requests.")
  with listen(args.host, args.port) as listener:
    start = time.perf_counter()
    trained = train_state.load_trained(Path(args.run_dir))  # a missing run or checkpoint stops it here
    process.enable_compilation_cache(data.default_cache_dir(), process.xla_cache_limit_bytes())
    workers, ready = start_workers(args, listener)

    def announce():
      up = wait_until_ready(workers, ready)
      if up < len(workers):
        print(f"warning: {len(workers) - up} of the {args.workers} worker processes did not start (their errors are "
              f"above); serving with {up + 1}.", file=sys.stderr, flush=True)
      print(ready_line(health(trained), args.run_dir, time.perf_counter() - start, args.host,
                       listener.getsockname()[1]), flush=True)

    server = _uvicorn_server(build_app(trained, make_forward(trained), page_bytes(), trusted_hosts_for(args.host),
                                       announce))
    try:
      server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then raises the SIGINT it caught again
      pass
    finally:
      stop_workers(workers)
    # Only a signal ends uvicorn's loop. It re-raises the one it caught only where Python's own handler
    # was in place before (once in CI it was not, and the process ended with 0): a stop is a stop.
    print("stopped.", file=sys.stderr)
    sys.exit(130)


def ready_line(status: dict, run_dir, seconds: float, host: str, port: int) -> str:
  accuracy = f", test accuracy {status['test_accuracy']:.4f}" if status["test_accuracy"] is not None else ""
  return (f"serving {status['model']} on {status['dataset_title']} (checkpoint of epoch {status['checkpoint_epoch']}"
          f"{accuracy}) from {run_dir}, "
          f"ready in {seconds:.1f} s\nopen {url_to_open(host, port)}   (Ctrl-C stops)")
