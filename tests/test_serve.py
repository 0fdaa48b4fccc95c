"""`jaxmnist serve`'s API against a real server: a subprocess on a free loopback port, serving a `tiny`
run trained for a few seconds on toy data.

A good drawing must get the very numbers `jaxmnist predict` computes (same preprocessing, same model);
every bad body must get a 4xx with a JSON {"error"} and leave the server healthy; a wrong RUN_DIR must
stop the command with exit 2 and one paragraph.
"""

import functools
import json
import socket
import struct
import zlib

import jax
import numpy as np
import pytest

from jaxmnist import cli, flags, predict, preprocess, runs, serve, train_state
from tests import serving
from tests.conftest import jaxmnist_cli

pytest.importorskip("starlette", reason="`jaxmnist serve` needs pip install -e '.[serve]' (or '.[test]')")
pytest.importorskip("uvicorn", reason="`jaxmnist serve` needs pip install -e '.[serve]' (or '.[test]')")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tiny_cli_run):
  return tiny_cli_run.run_dir


@pytest.fixture(scope="module")
def server(tiny_cli_run):
  """`jaxmnist serve` of tiny_cli_run, started once for this file (each start loads the run and compiles its
  forward pass, seconds); at the end, Ctrl-C must stop it cleanly."""
  running = serving.Server(tiny_cli_run.run_dir, tiny_cli_run.run_dir.parent / "cache")
  yield running
  assert running.stop() == 130 and "stopped." in "".join(running.stderr)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
  return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@functools.cache  # 0.3 s to write
def bomb_png(side=20_000) -> bytes:
  """A real 1-bit PNG of side x side black pixels (400 megapixels) that compresses to about 50 kB."""
  row = b"\0" * (1 + side // 8)  # filter byte, then side bits
  packer = zlib.compressobj(9)
  pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
  header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
  return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def blank_png() -> bytes:
  return serving.drawing(strokes=[])


def too_large_png() -> bytes:
  return PNG_SIGNATURE + b"\0" * serve.MAX_BODY_BYTES  # one byte more than the limit, with the right start


# (what is wrong, a function making the body, Content-Type, expected status)
BAD_BODIES = [
    ("not an image", lambda: b"hello, this is text", "image/png", 400),
    ("empty body", lambda: b"", "image/png", 400),
    ("a JPEG sent as PNG", lambda: serving.drawing(image_format="JPEG"), "image/png", 400),
    ("a damaged PNG", lambda: serving.drawing()[:300], "image/png", 422),
    ("a blank white canvas", blank_png, "image/png", 422),
    ("a decompression bomb", bomb_png, "image/png", 422),
    ("text/plain", serving.drawing, "text/plain", 415),
    ("a form upload", serving.drawing, "multipart/form-data; boundary=x", 415),
    ("no Content-Type", serving.drawing, None, 415),
    ("a body over the limit", too_large_png, "image/png", 413),
]


def send_chunked(server, body: bytes, chunk_size=64 * 1024):
  """POSTs with Transfer-Encoding: chunked, so no Content-Length announces the size."""
  connection = server.connection()
  try:
    chunks = (body[i:i + chunk_size] for i in range(0, len(body), chunk_size))
    try:
      connection.request("POST", "/api/predict", body=chunks, headers={"Content-Type": "image/png"},
                         encode_chunked=True)
    except (BrokenPipeError, ConnectionResetError):
      pass  # the server may answer and stop reading before the last chunk: its answer is still there
    response = connection.getresponse()
    return response.status, json.loads(response.read())
  finally:
    connection.close()


def test_health_names_the_run_its_checkpoint_and_test_accuracy(server, tiny_run):
  status, answer = server.get("/api/health")
  summary = runs.read_summary(tiny_run)
  assert status == 200
  assert answer["model"] == runs.read_config(tiny_run).model
  assert answer["run_dir"] == str(tiny_run)
  assert answer["checkpoint_epoch"] == summary["epochs_completed"]
  assert answer["test_accuracy"] == summary["test_accuracy"]
  # An MNIST run (the default dataset): the page labels its bars with the digits.
  assert (answer["dataset"], answer["dataset_title"]) == ("mnist", "MNIST")
  assert answer["class_names"] == [str(d) for d in range(10)]


@pytest.mark.parametrize("image_format, content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_predict_gives_what_jaxmnist_predict_computes(server, tiny_run, image_format, content_type):
  body = serving.drawing(serving.SEVEN, image_format)
  status, answer = server.post("/api/predict", body, content_type)
  assert status == 200, answer
  image_HxW = np.array(answer["image"])
  assert image_HxW.shape == (28, 28) and image_HxW.min() >= 0 and image_HxW.max() <= 255
  expected_image = preprocess.to_mnist(body)  # the function `jaxmnist predict` calls
  np.testing.assert_array_equal(image_HxW, expected_image[..., 0])
  probabilities_C = np.array(answer["probabilities"])
  assert probabilities_C.shape == (10,) and abs(probabilities_C.sum() - 1) < 1e-4
  assert answer["digit"] == int(np.argmax(probabilities_C)) and answer["class"] == str(answer["digit"])
  expected_C = predict.outputs_fn(train_state.load_trained(tiny_run))(expected_image[None])[0][0]
  np.testing.assert_allclose(probabilities_C, expected_C, atol=2e-6)  # rounded to 6 decimals in the JSON


def test_charset_and_case_in_content_type_are_accepted(server):
  status, answer = server.post("/api/predict", serving.drawing(), "Image/PNG; charset=binary")
  assert status == 200, answer


@pytest.mark.parametrize("what, make_body, content_type, expected", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_a_bad_body_gets_a_4xx_json_error(server, what, make_body, content_type, expected):
  status, headers, reply = server.request("POST", "/api/predict", make_body(),
                                          {"Content-Type": content_type} if content_type else {})
  assert status == expected, (what, reply)
  assert headers["content-type"] == "application/json"
  error = json.loads(reply)["error"]
  assert error and "Traceback" not in error, what


def test_a_body_over_the_limit_without_content_length_is_counted_and_refused(server):
  status, answer = send_chunked(server, too_large_png())
  assert status == 413 and "2 MB" in answer["error"]
  status, answer = send_chunked(server, serving.drawing())  # the same path, within the limit
  assert status == 200, answer


def test_a_content_length_that_is_not_a_number_is_refused_before_the_app(server):
  # uvicorn answers it with a 400 of its own: serve.read_image can read the header as a number.
  with socket.create_connection((server.host, server.port), timeout=30) as connection:
    connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                       b"Content-Length: 12abc\r\n\r\n")
    assert connection.recv(4096).startswith(b"HTTP/1.1 400")
  assert server.get("/api/health")[0] == 200


def test_the_server_is_healthy_after_every_bad_body(server):
  connection = server.connection()  # one keep-alive connection through all of it
  for what, make_body, content_type, expected in BAD_BODIES:
    headers = {"Content-Type": content_type} if content_type else {}
    assert server.request("POST", "/api/predict", make_body(), headers, connection)[0] == expected, what
  assert server.get("/api/health")[0] == 200
  assert server.post("/api/predict", serving.drawing(), "image/png", connection)[0] == 200
  assert server.process.poll() is None
  assert "Traceback" not in "".join(server.stderr)


@pytest.mark.parametrize("path", ["/index.html", "/web/index.html", "/jaxmnist/serve.py", "/api/../serve.py",
                                  "/%2e%2e/%2e%2e/etc/passwd", "/api/health/../../../etc/passwd", "/favicon.ico"])
def test_no_path_reaches_the_file_system(server, path):
  status, headers, reply = server.request("GET", path)
  assert status == 404 and "error" in json.loads(reply)


def test_the_page_is_self_contained_html_from_the_package(server):
  status, headers, page = server.request("GET", "/")
  assert status == 200 and headers["content-type"].startswith("text/html")
  assert page == serve.page_bytes()
  assert b"http://" not in page and b"https://" not in page and b"//cdn" not in page  # works offline
  assert "default-src 'none'" in headers["content-security-policy"]  # and the browser holds it to that
  assert server.request("GET", "/api/predict")[0] == 405


def test_only_loopback_host_names_are_answered(server):
  assert server.request("GET", "/api/health", headers={"Host": "attacker.example"})[0] == 400
  assert server.request("GET", "/api/health", headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_listens_on_127_0_0_1_by_default(server):
  args = flags.build_parser().parse_args(["serve", "some-run"])
  assert (args.host, args.port) == ("127.0.0.1", 8000)
  assert server.url.startswith("http://127.0.0.1:")
  assert serve.trusted_hosts_for("0.0.0.0") is None  # a host the user chose answers any name


def test_without_starlette_or_uvicorn_it_says_what_to_install(monkeypatch):
  find_spec = serve.importlib.util.find_spec
  monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None if name == "uvicorn" else find_spec(name))
  with pytest.raises(serve.UserError, match=r"uvicorn missing.*pip install 'jaxmnist\[serve\]'"):
    serve.require_installed()


def test_urls_to_open():
  assert serve.url_to_open("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
  assert serve.url_to_open("0.0.0.0", 80) == "http://127.0.0.1:80/"
  assert serve.url_to_open("::", 8000) == "http://[::1]:8000/"
  assert serve.url_to_open("::1", 8000) == "http://[::1]:8000/"


def test_requests_never_compile(tiny_run):
  # The forward pass compiles once, at start-up; no drawing, first or later, compiles again.
  forward = predict.outputs_fn(train_state.load_trained(tiny_run))
  serve.predict_picture(serving.drawing(), forward)
  events = []
  listener = lambda name, *_, **__: events.append(name) if "/compile/" in name else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for strokes in (serving.SEVEN, serving.ONE, serving.ZERO):
      serve.predict_picture(serving.drawing(strokes), forward)
  finally:
    # Public from jax 0.8.1; before it, the same function under its private name.
    unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None) \
        or jax._src.monitoring._unregister_event_duration_listener_by_callback  # pylint: disable=protected-access
    unregister(listener)
  assert not events


def one_line_error(returncode, stderr):
  lines = stderr.strip().splitlines()
  return returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr


def serve_in_process(capsys, *args):
  """`jaxmnist serve ARGS` through the CLI's own main, in this process: (exit code, stderr)."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["serve", *map(str, args)])
  return exit_info.value.code, capsys.readouterr().err


def test_a_missing_run_dir_stops_with_exit_2(tmp_path):
  result = jaxmnist_cli("serve", tmp_path / "no-such-run", cwd=tmp_path, cache_dir=tmp_path / "cache")
  assert one_line_error(result.returncode, result.stderr), result.stderr
  assert "is not a directory" in result.stderr


def test_a_directory_that_is_not_a_run_stops_with_exit_2(tmp_path, capsys):
  code, stderr = serve_in_process(capsys, tmp_path)
  assert one_line_error(code, stderr) and "not a jaxmnist run" in stderr, stderr


def test_a_run_without_a_checkpoint_stops_with_exit_2(tmp_path, tiny_run, capsys):
  run_dir = tmp_path / "unfinished"
  run_dir.mkdir()
  (run_dir / "config.json").write_text((tiny_run / "config.json").read_text())
  code, stderr = serve_in_process(capsys, run_dir, "--port", 0)
  assert one_line_error(code, stderr) and "no complete checkpoint" in stderr, stderr


def test_a_busy_port_stops_with_exit_2(tiny_run, capsys):
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    code, stderr = serve_in_process(capsys, tiny_run, "--port", taken.getsockname()[1])
  assert one_line_error(code, stderr) and "--port" in stderr, stderr
