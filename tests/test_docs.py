"""The documentation site builds without a warning, and what its pages show is true.

- ``mkdocs build --strict`` (mkdocs.yml turns every unresolved link, anchor, cross-reference
  and page left out of the nav into a warning, and ``--strict`` into a failure) builds the
  key pages, one API page per public module, and resolves the cross-references into them.
- The Python examples of every page run against the current API, in a fresh folder with
  ``models/`` beside it, in float32 as a user runs them, with warnings as errors. A block
  fenced as ```` ```python title="NAME" ```` is a file the page asks the reader to save:
  it is written, not run.
- The model-script errors the pages quote are the errors latentae raises for those scripts.
- The ``--help`` texts on the command-line page are the parser's own; after a change to the
  command line, ``python -m tests.test_docs`` rewrites them.

Run time on the shared 2-core machine: the build takes 4-8 s, the examples about 30 s of
CPU time (most of it in the short training runs the pages show), the rest under a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latentae as lae
from tests.conftest import ROOT

DOCS = ROOT / "docs"
# The hand-written pages (docs/results and docs/notebooks are produced by commands).
PAGES = [
    "index.md",
    "getting-started.md",
    "model-scripts.md",
    "concepts.md",
    "compatibility.md",
    "scores-and-manifolds.md",
    "sampling.md",
    "distributed.md",
    "cli.md",
]
NOTEBOOKS = ["posterior_sampling", "compatibility", "score_and_manifold"]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
TITLE = re.compile(r'title="([^"]+)"')
# The width the command-line page's --help texts are formatted at.
HELP_COLUMNS = "90"

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (pip install -e '.[test]' installs it)",
)


def public_modules() -> list[str]:
    """Modules of the package that declare a public interface (``__all__``)."""
    return sorted(
        path.stem
        for path in (ROOT / "latentae").glob("*.py")
        if not path.stem.startswith("_") and re.search(r"^__all__\b", path.read_text(), re.M)
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    return out


# ---------------------------------------------------------------------------- the build


@needs_mkdocs
def test_site_builds_with_every_page(site):
    for page in PAGES:
        name = page.removesuffix(".md")
        html = site / ("index.html" if name == "index" else f"{name}/index.html")
        assert html.is_file(), f"{page} was not built"
    assert (site / "results" / "index.html").is_file()
    for notebook in NOTEBOOKS:
        assert (site / "notebooks" / notebook / "index.html").is_file()
    for figure in ("ppca", "spiral"):
        assert (site / "results" / "study-cpu" / figure / "study.png").is_file()
    compatibility = (site / "compatibility" / "index.html").read_text()
    assert 'src="../results/study-cpu/ppca/study.png"' in compatibility
    assert 'src="../results/study-cpu/spiral/study.png"' in compatibility


@needs_mkdocs
def test_every_public_module_has_an_api_page(site):
    config = (ROOT / "mkdocs.yml").read_text()
    modules = public_modules()
    assert {"joint", "compat", "score", "plots"} <= set(modules)
    for module in modules:
        page = DOCS / "api" / f"{module}.md"
        assert page.is_file(), f"latentae.{module} has no API page docs/api/{module}.md"
        assert f"::: latentae.{module}" in page.read_text()
        assert f"api/{module}.md" in config, f"docs/api/{module}.md is not in the nav"
        html = (site / "api" / module / "index.html").read_text()
        # mkdocstrings rendered the module's members, each with its own anchor.
        assert f'id="latentae.{module}.' in html, f"the API page of latentae.{module} is empty"
    joint = (site / "api" / "joint" / "index.html").read_text()
    assert 'id="latentae.joint.JointModel.encoder"' in joint


@needs_mkdocs
def test_docstring_cross_references_all_resolve(site):
    # A Sphinx role (:func:`name`) is not markup here: it passes the strict build and shows as
    # literal text. An unresolved [`name`][] fails the build (autorefs warns) and would show as
    # literal brackets; checked here too, so the test does not lean on that warning alone.
    role = r":(?:class|func|meth|attr|mod|data|exc|obj):(?:`|<code>)"
    unresolved = re.compile(r"\[<code>[^<]*</code>\]\[[^\]]*\]|" + role)
    for page in sorted((site / "api").rglob("index.html")):
        found = sorted(set(unresolved.findall(page.read_text())))
        assert not found, f"{page.parent.name}: unresolved cross-references {found}"
    dae = (site / "api" / "dae" / "index.html").read_text()
    assert 'href="../units/#latentae.units.GaussianEncoder"' in dae


@needs_mkdocs
def test_cross_references_resolve_to_the_api_pages(site):
    concepts = (site / "concepts" / "index.html").read_text()
    for target in (
        "../api/score/#latentae.score.dae_score",
        "../api/joint/#latentae.joint.JointModel.encoder",
        "../api/compat/#latentae.compat.cross_ratio",
        "../api/manifold/#latentae.manifold.tangent_plane",
        "../api/stack/#latentae.stack.pretrain_stack",
    ):
        assert f'href="{target}"' in concepts, target
    # The math is left to MathJax: arithmatex wraps it, and the page loads the script.
    assert 'class="arithmatex"' in concepts
    assert "mathjax" in concepts.lower()


# ---------------------------------------------------------------------------- the examples


def blocks(page: str) -> list[tuple[str, str | None, str, int]]:
    """``(language, file name or None, code, line)`` of every fenced block of a page."""
    text = (DOCS / page).read_text()
    out = []
    for match in FENCE.finditer(text):
        language, info, body = match.groups()
        title = TITLE.search(info)
        line = text.count("\n", 0, match.start()) + 1
        out.append((language, title.group(1) if title else None, body, line))
    return out


@pytest.fixture
def reader_folder(tmp_path, monkeypatch):
    """A fresh working folder with the example models, float32 and a headless matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    torch.set_default_dtype(torch.float32)  # the conftest fixture restores float64 after
    return tmp_path


@pytest.mark.parametrize("page", [p for p in PAGES if any(b[0] == "python" for b in blocks(p))])
def test_examples_run(page, reader_folder, capsys):
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for language, title, code, line in blocks(page):
        if title is not None:
            (reader_folder / title).write_text(code)
        elif language == "python":
            exec(compile(code, f"docs/{page}:{line}", "exec"), namespace)
            ran += 1
    capsys.readouterr()
    assert ran > 0


def quoted_errors(page: str) -> list[tuple[str, str, str]]:
    """``(file name, code, quoted message)`` for each script shown with its ModelError."""
    found = []
    page_blocks = blocks(page)
    for (_, title, code, _), (language, _, message, _) in itertools.pairwise(page_blocks):
        if title and language == "text" and message.startswith("ModelError: "):
            found.append((title, code, message))
    return found


def test_quoted_model_errors_are_the_real_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = quoted_errors("model-scripts.md")
    quoted = [b for b in blocks("model-scripts.md") if b[2].startswith("ModelError: ")]
    assert len(cases) == len(quoted) >= 10, "a quoted error without the script behind it"
    for name, code, message in cases:
        (tmp_path / name).write_text(code)
        with pytest.raises(lae.ModelError) as caught:
            lae.JointModel.from_file(name).data()
        assert " ".join(f"ModelError: {caught.value}".split()) == " ".join(message.split())


# ---------------------------------------------------------------------------- the CLI page


def help_texts() -> dict[str, str]:
    """``{"": top-level help, command: its help}``, formatted at HELP_COLUMNS columns."""
    from latentae.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse reads the width when it formats
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        texts = {"": parser.format_help()}
        texts.update({name: p.format_help() for name, p in commands.choices.items()})
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return texts


def documented_help(text: str) -> dict[str, str]:
    """The ```text block after the page title and after each "## `latentae COMMAND`"."""
    found = {}
    sections = re.split(r"^## `latentae (\w+)`\n", text, flags=re.M)
    for name, body in [("", sections[0]), *zip(sections[1::2], sections[2::2], strict=True)]:
        match = re.search(r"^```text\n(.*?)^```", body, re.M | re.S)
        if match:
            found[name] = match.group(1)
    return found


def refresh_cli_page() -> None:
    """Rewrite the --help blocks of docs/cli.md from the current parser."""
    path = DOCS / "cli.md"
    text = path.read_text()
    for name, help_text in help_texts().items():
        old = documented_help(text).get(name)
        if old is None:
            raise SystemExit(f"docs/cli.md has no section for 'latentae {name}'; add one")
        text = text.replace(f"```text\n{old}```", f"```text\n{help_text}```", 1)
    path.write_text(text)


def test_cli_page_shows_every_command_with_its_current_help():
    documented = documented_help((DOCS / "cli.md").read_text())
    current = help_texts()
    assert sorted(documented) == sorted(current), "docs/cli.md needs one section per command"
    stale = [name or "(top level)" for name in current if documented[name] != current[name]]
    assert not stale, (
        f"the --help of {stale} changed; run `python -m tests.test_docs` to refresh docs/cli.md"
    )


if __name__ == "__main__":
    refresh_cli_page()
    print("rewrote the --help blocks of docs/cli.md")
