"""`jaxmnist serve RUN_DIR`: draw a digit in the browser and watch the run's model read it as you draw.

Synopsis:
  jaxmnist serve runs/cnn-20261127-120000 --port 0      # any free port; the printed URL says which
  curl -s -H 'Content-Type: image/png' --data-binary @digit.png http://127.0.0.1:8000/api/predict

GET / is the page (jaxmnist/web/index.html), POST /api/predict reads a PNG or JPEG as `jaxmnist predict`
does, GET /api/health names the run (docs/serving.md). Starlette on uvicorn (`pip install
'jaxmnist[serve]'`) gives routing, a request stream and a server. Preprocessing and the forward pass
hold a CPU for 5-10 ms, so they run in the threadpool and the event loop stays free.

Safe by default: on 127.0.0.1 it answers only Host headers that name the loopback (no DNS rebinding);
bodies are capped at MAX_BODY_BYTES; a body must start as its Content-Type says, so only the PNG or JPEG
decoder sees it; every refusal is a 4xx with {"error": "..."}; no part of a request names a file.
"""

import argparse
import contextlib
import importlib.resources
import importlib.util
import io
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from jaxmnist import datasets, interpret, predict, preprocess, process, runs, train_state
from jaxmnist.errors import UserError

MAX_BODY_BYTES = 2 * 2**20  # a 280x280 canvas PNG takes 5-15 kB; a cropped photo of a digit fits too
IMAGE_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
PAGE = "web/index.html"
# The page loads nothing from elsewhere; this header makes the browser hold it to that.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Refusal(Exception):
  """A request the server turns down: the HTTP status and the message for {"error": ...}."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def sample_drawings() -> list[bytes]:
  """A stroke on a white canvas, as PNG and as JPEG: start-up warms every step of a request with them."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  canvas = Image.new("L", (280, 280), 255)
  ImageDraw.Draw(canvas).line([(140, 40), (140, 240)], fill=0, width=20)
  buffers = [io.BytesIO(), io.BytesIO()]
  for buffer, image_format in zip(buffers, ("PNG", "JPEG")):
    canvas.save(buffer, format=image_format)
  return [buffer.getvalue() for buffer in buffers]


def predict_picture(body: bytes, forward: predict.Outputs, class_names=interpret.DIGITS, members: int = 0) -> dict:
  """The reply to one picture; Refusal(422) when preprocessing turns it down (damaged, blank, huge)."""
  start = time.perf_counter()
  try:
    digit_HxWxC = preprocess.to_mnist(body, name="the uploaded image")
  except UserError as error:
    raise Refusal(422, str(error)) from None
  (probabilities_C, *_), agreeing_N = forward(digit_HxWxC[None])
  top = int(np.argmax(probabilities_C))
  agreement = {"members": members, "members_agreeing": int(agreeing_N[0])} if members else {}
  return {"digit": top, "class": class_names[top], "probabilities": [round(float(p), 6) for p in probabilities_C],
          "image": digit_HxWxC[..., 0].tolist(), **agreement, "ms": round(1000 * (time.perf_counter() - start), 2)}


def health(trained: train_state.Trained) -> dict:
  summary = runs.read_summary(trained.run_dir) or {}
  dataset = datasets.get(trained.config.dataset)
  return {"status": "ok", "model": trained.config.model, "run_dir": str(trained.run_dir),
          "checkpoint_epoch": trained.epoch, "test_accuracy": summary.get("test_accuracy"),
          "checkpoint": trained.checkpoint_line, "dataset": dataset.name, "dataset_title": dataset.title,
          "members": trained.num_members,  # 0: one model (or a sweep's member); else an ensemble of that many
          "class_names": list(dataset.class_names)}


async def read_image(request, limit: int = MAX_BODY_BYTES) -> bytes:
  """The body of a picture, else a Refusal: 415 for a Content-Type other than image/png or image/jpeg; 413 past
  the limit, by the Content-Length before a byte is read and then by the bytes that arrive (a missing or false
  Content-Length cannot pass it); 400 unless the body starts as its type says (only that decoder reads it)."""
  media_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
  if media_type not in IMAGE_SIGNATURES:
    raise Refusal(415, f"Content-Type {media_type or '(none)'} is not accepted: send the picture as image/png "
                  f"or image/jpeg (a canvas's toBlob gives image/png).")
  too_large = Refusal(413, f"The body is larger than {limit // 2**20} MB, the most this server reads. A drawing "
                           f"takes a few kB: shrink the picture and retry.")
  if int(request.headers.get("content-length") or 0) > limit:  # uvicorn has refused one that is not a number
    raise too_large
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise too_large
    chunks.append(chunk)
  if not (body := b"".join(chunks)):
    raise Refusal(400, "The body is empty: send the picture's PNG or JPEG bytes.")
  if not body.startswith(IMAGE_SIGNATURES[media_type]):
    raise Refusal(400, f"The body is not {media_type.split('/')[1].upper()} data, as its Content-Type "
                  f"{media_type} says. Send a PNG or JPEG picture of one digit.")
  return body


def build_app(trained: train_state.Trained, forward: predict.Outputs, page: bytes, trusted_hosts=None,
              on_ready: Callable[[], None] = lambda: None):
  """The Starlette app: three fixed routes; every error a JSON {"error": ...}. Its start-up runs sample
  drawings through the whole path, threadpool included, so that nothing compiles or starts on a request."""
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

  status = health(trained)  # summary.json is read once: a finished run does not change

  async def predict_route(request):
    try:
      body = await read_image(request)
      return reply(200, await run_in_threadpool(predict_picture, body, forward, status["class_names"],
                                                status["members"]))
    except Refusal as refusal:
      return reply(refusal.status, {"error": refusal.message})

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
  routes = [Route("/", index, methods=["GET"]), Route("/api/predict", predict_route, methods=["POST"]),
            Route("/api/health", health_route, methods=["GET"])]
  return Starlette(routes=routes, middleware=middleware, lifespan=warm_up,
                   exception_handlers={HTTPException: http_error, Exception: server_error})


def page_bytes() -> bytes:
  return importlib.resources.files("jaxmnist").joinpath(PAGE).read_bytes()


def trusted_hosts_for(host: str) -> tuple[str, ...] | None:
  """The Host headers to answer: the loopback names when listening there, else any (the user chose)."""
  return LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else None


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
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
  except OSError as error:
    raise UserError(f"--host {host} cannot be listened on ({error}). Leave --host out for 127.0.0.1.") from None
  try:  # SO_REUSEADDR on POSIX: a restart need not wait out TIME_WAIT; browsers wait in the backlog meanwhile
    return socket.create_server((host, port), family=family, backlog=128)
  except OSError as error:
    raise UserError(f"Cannot listen on {host}:{port}: {error.strerror}. Pick another --port (or --port 0 "
                    f"for any free one).") from None


def require_installed() -> None:
  missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
  if missing:
    raise UserError(f"`jaxmnist serve` needs Starlette and uvicorn ({' and '.join(missing)} missing here): "
                    f"pip install 'jaxmnist[serve]'.")


def main(args: argparse.Namespace) -> None:
  require_installed()
  import uvicorn  # pylint: disable=g-import-not-at-top

  with listen(args.host, args.port) as listener:
    start = time.perf_counter()
    member = runs.chosen_member(args.run_dir, runs.read_config(args.run_dir), args.member)
    trained = train_state.load_trained(Path(args.run_dir), member=member)  # a missing checkpoint stops it here
    process.open_caches()

    def announce():
      print(ready_line(health(trained), args.run_dir, time.perf_counter() - start, args.host,
                       listener.getsockname()[1]), flush=True)

    app = build_app(trained, predict.outputs_fn(trained), page_bytes(), trusted_hosts_for(args.host), announce)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", server_header=False))
    try:
      server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn stops gracefully, then re-raises the SIGINT it caught, but only where
      pass  # Python's own handler was in place (once in CI it was not: exit 0). Only a signal ends its loop.
    print("stopped.", file=sys.stderr)
    sys.exit(130)


def ready_line(status: dict, run_dir, seconds: float, host: str, port: int) -> str:
  accuracy = f", test accuracy {status['test_accuracy']:.4f}" if status["test_accuracy"] is not None else ""
  return (f"serving {status['model']} on {status['dataset_title']} (checkpoint of epoch {status['checkpoint_epoch']}"
          f"{accuracy}) from {run_dir}, ready in {seconds:.1f} s\nopen {url_to_open(host, port)}   (Ctrl-C stops)")
