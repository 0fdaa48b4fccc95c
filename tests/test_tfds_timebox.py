"""The tfds attempt is time-boxed: a quick TCP probe of tfds's download host before tfds may download.

Synopsis:
  python -m pytest tests/test_tfds_timebox.py

Every connection here is real, to loopback ports: a closed one, a listening one, and one that
swallows connection attempts as a firewall that drops packets does. Nothing leaves the machine.
"""

import logging
import socket
import time
import urllib.parse

import pytest

from jaxmnist import data, sources
from jaxmnist.errors import DataError


@pytest.fixture
def closed_port():
  """A loopback port that nothing listens on: bound, never listening, so it refuses every connection, and
  held for the test, so that no other process can take the number meanwhile."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]


def test_probe_of_a_closed_port_fails_fast(closed_port):
  # A refusal, not the timeout: past its 60 s the probe would say "no answer within 60 s" instead.
  error = sources.tfds_connect_error("127.0.0.1", closed_port, timeout_s=60.0)
  assert error is not None and "refused" in error.lower(), error


def test_probe_of_a_listening_port_succeeds():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    assert sources.tfds_connect_error("127.0.0.1", server.getsockname()[1], timeout_s=3.0) is None


@pytest.fixture
def silent_port():
  """A loopback port that swallows connection attempts, as a firewall that drops packets does.

  A listener with a backlog of 0 whose one queue slot is taken: the kernel then drops further SYNs,
  so a connect neither succeeds nor is refused. (A non-routable address such as 10.255.255.1 does
  this on an ordinary network, but a sandbox's transparent proxy may answer it.)
  """
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
      yield port


def test_probe_timeout_bounds_the_wait_where_packets_are_dropped(silent_port):
  started = time.perf_counter()
  assert sources.tfds_connect_error("127.0.0.1", silent_port, timeout_s=0.5) == "no answer within 0.5 s"
  assert 0.45 <= time.perf_counter() - started < 10.0  # it waited out the timeout (to the ms), not much longer


def test_probe_host_is_the_host_of_tfds_mnist_urls():
  tfds = pytest.importorskip("tensorflow_datasets")
  assert urllib.parse.urlparse(tfds.builder_cls("mnist").URL).hostname == sources.TFDS_DOWNLOAD_HOST


def test_no_probe_behind_an_https_proxy(monkeypatch):
  # tfds would reach the host through the proxy, so a direct connect says nothing about it.
  for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
    monkeypatch.delenv(name, raising=False)
  assert not sources._tfds_via_proxy()  # pylint: disable=protected-access
  monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
  assert sources._tfds_via_proxy()  # pylint: disable=protected-access
  monkeypatch.setenv("NO_PROXY", sources.TFDS_DOWNLOAD_HOST)
  assert not sources._tfds_via_proxy()  # pylint: disable=protected-access


@pytest.fixture
def tfds_wants_to_download(tmp_path, monkeypatch):
  """TensorFlow counts as installed, the tfds data dir is empty and no proxy is set: tfds would download."""
  pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(sources, "_tensorflow_installed", lambda: True)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tensorflow_datasets"))
  for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(name, raising=False)


def test_unreachable_download_host_skips_tfds_in_one_line(tfds_wants_to_download, closed_port,
                                                           monkeypatch, tmp_path):
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_HOST", "127.0.0.1")
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_PORT", closed_port)
  started = time.perf_counter()
  with pytest.raises(DataError, match=rf"^tfds skipped: its download host 127\.0\.0\.1:{closed_port} "
                                      r"is unreachable \(.*refused.*\); TensorFlow is installed") as e:
    sources.read_tfds()
  assert time.perf_counter() - started < 5.0
  assert "\n" not in str(e.value)
  # What load_mnist reports for the tfds source, when no other source works either.
  with pytest.raises(DataError, match=r"tfds: tfds skipped: its download host"):
    data.load_mnist("tfds", cache_dir=tmp_path / "cache")


def test_silent_download_host_skips_tfds_after_the_probe_timeout(tfds_wants_to_download, silent_port,
                                                                monkeypatch):
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_HOST", "127.0.0.1")
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_PORT", silent_port)
  monkeypatch.setattr(sources, "TFDS_PROBE_TIMEOUT_S", 0.5)
  started = time.perf_counter()
  with pytest.raises(DataError, match=r"is unreachable \(no answer within 0\.5 s\)"):
    sources.read_tfds()
  assert time.perf_counter() - started < 10.0  # the probe's 0.5 s and tfds's imports, not a download's wait


@pytest.fixture
def restore_tfds_loggers():
  loggers = [logging.getLogger(name) for name in ("absl", "urllib3")]
  levels = [logger.level for logger in loggers]
  yield
  for logger, level in zip(loggers, levels):
    logger.setLevel(level)  # setLevel, not an assignment: it also clears the loggers' caches


def test_tfds_bars_are_hidden_during_the_attempt_and_retry_warnings_after_it(restore_tfds_loggers):
  # pylint: disable=protected-access  (tfds keeps its progress-bar switch in tqdm_utils._active)
  tfds = pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top

  urllib3_logger = logging.getLogger("urllib3")
  bars_before = tqdm_utils._active
  with sources._quiet_tfds(tfds):
    assert not tqdm_utils._active
    assert not urllib3_logger.isEnabledFor(logging.WARNING)
  assert tqdm_utils._active == bars_before
  assert not urllib3_logger.isEnabledFor(logging.WARNING)


def test_the_fallback_says_in_one_line_that_tfds_was_skipped(tfds_wants_to_download, closed_port, monkeypatch,
                                                            tmp_path):
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_HOST", "127.0.0.1")
  monkeypatch.setattr(sources, "TFDS_DOWNLOAD_PORT", closed_port)
  mnist = data.load_mnist("auto", cache_dir=tmp_path / "cache")  # falls back to the PyPI copy
  assert mnist.source.startswith("PyPI package")
  assert len(mnist.notes) == 1 and mnist.notes[0].startswith("tfds: tfds skipped: its download host 127.0.0.1")
