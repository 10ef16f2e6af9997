"""Doctests in the library refer to ``models/...``: run them from the repository root."""

from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_cwd(request, monkeypatch):
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(Path(__file__).parent)
