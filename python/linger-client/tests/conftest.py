"""Fixtures: a World of temporary directories and real daemons, torn down by pid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testsupport"))

from linger_world import World  # noqa: E402


@pytest.fixture
def world():
    w = World()
    try:
        yield w
    finally:
        w.teardown()
