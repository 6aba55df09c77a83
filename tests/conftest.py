"""Fixtures. Helpers are in helpers.py; tests that need the real DFT files in ../shared skip
visibly without them."""

from __future__ import annotations

from pathlib import Path

import ase.io
import pytest

from helpers import emt_frames


@pytest.fixture
def emt_xyz(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "emt.extxyz"
    path.parent.mkdir()
    ase.io.write(path, emt_frames(), format="extxyz")
    return path


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def pytest_terminal_summary(terminalreporter):
    """Print the figures tests recorded (kills survived, inputs tried, fit errors, ...), so
    CI logs show them even when tests run in parallel workers."""
    figures = [value for report in terminalreporter.stats.get("passed", [])
               for name, value in getattr(report, "user_properties", []) if name == "figure"]
    if figures:
        terminalreporter.section("figures measured by the tests")
        for line in figures:
            terminalreporter.write_line(line)
