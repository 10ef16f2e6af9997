"""Execute the notebooks in this folder and store them with their outputs.

The documentation site renders the stored outputs, so run this after editing a notebook:

    OMP_NUM_THREADS=1 python docs/notebooks/execute.py            # every notebook here
    OMP_NUM_THREADS=1 python docs/notebooks/execute.py compatibility.ipynb

Each notebook runs in a fresh ``python3`` kernel (one thread) with this folder as its working
directory, as the test suite runs it (tests/test_notebooks.py), and is rewritten atomically
only if every cell succeeded. The wall time of each is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from latentae._util import atomic_write_text

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 300  # seconds; a stuck cell fails instead of hanging the run


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run ``path`` in a fresh kernel from this folder; return the executed notebook and its
    wall time in seconds (kernel start included). Raises nbclient's CellExecutionError."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": HERE}}
    )
    start = time.perf_counter()
    # One thread: parallel reductions can change the last digits of the stored figures from
    # run to run, and the notebooks' networks are too small to gain from more.
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return nb, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all here)")
    args = parser.parse_args(argv)
    paths = [HERE / name for name in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            print(f"error: no notebook {str(path)!r}", file=sys.stderr)
            return 2
        nb, seconds = execute(path)
        text = nbformat.writes(nb)
        atomic_write_text(path, text if text.endswith("\n") else text + "\n")
        print(f"{path.name}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
