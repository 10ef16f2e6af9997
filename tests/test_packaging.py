"""What an installed (non-editable) latentae contains."""

import tomllib

from setuptools import find_packages

from tests.conftest import ROOT


def test_every_subpackage_is_installed():
    """The package list of pyproject.toml covers every folder of latentae/ with an
    __init__.py (a wheel built from a fixed list once left out latentae.cli)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), **config["packages"]["find"]))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "latentae").rglob("__init__.py")
    }
    assert on_disk <= found and "latentae.cli" in found
    assert all(name.startswith("latentae") for name in found)
