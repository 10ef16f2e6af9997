"""The README's two quick-start commands, run as written in a fresh virtual environment.

What is checked
---------------
A copy of the repository's tracked files goes into a temporary folder, a new virtual
environment is made there with this Python (``python -m venv``, nothing but pip inside),
and the two commands of README.md's "Quick start" section run in it through bash, with the
venv's ``bin`` first on PATH:

1. ``pip install torch==2.13.0 && pip install -e . && latentae run models/ppca.py``: must
   exit 0 and leave ``runs/ppca/`` with report.json, posterior.nc, checkpoint.pt,
   loss.png and compatibility.png; the wall time of ``latentae run`` alone is reported
   against the 3-minute target on 2 CPU cores (the install time separately);
2. with ``--tests``, ``pip install torch==2.13.0 && pip install -e ".[test]" && python -m
   pytest``: must exit 0.

The commands are read from README.md, so the check follows the README. It needs the
package registries (pip) and takes a few minutes; it is a script, not part of the test suite.

Usage::

    python benchmarks/fresh_venv.py            # the first command
    python benchmarks/fresh_venv.py --tests    # both commands
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("report.json", "posterior.nc", "checkpoint.pt", "loss.png", "compatibility.png")
RUN_TARGET_S = 180.0


def quick_start_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", section, re.S)]


def copy_tracked_files(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source, dest = ROOT / name, target / name
        if source.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
            dest.chmod(source.stat().st_mode)


def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True)  # fmt: skip
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", action="store_true", help="also run the test command")
    args = parser.parse_args(argv)
    install_and_run, install_and_test = quick_start_commands()
    result: dict[str, object] = {"python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        repo, venv = Path(tmp) / "latentae", Path(tmp) / "venv"
        copy_tracked_files(repo)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv))
        # The install and the run are timed apart: the 3-minute target is the run's.
        install, _, latentae_run = install_and_run.rpartition(" && ")
        code, seconds, log = run(install, repo, env)
        result["install"] = {"exit": code, "seconds": round(seconds, 1)}
        if code != 0:
            print(log[-3000:])
            print(json.dumps(result, indent=2))
            return 1
        code, seconds, log = run(latentae_run, repo, env)
        missing = [name for name in OUTPUTS if not (repo / "runs" / "ppca" / name).exists()]
        result["run"] = {"command": latentae_run, "exit": code, "seconds": round(seconds, 1),
                         "target_seconds": RUN_TARGET_S, "missing_outputs": missing}  # fmt: skip
        ok = code == 0 and not missing and seconds < RUN_TARGET_S
        if code != 0:
            print(log[-3000:])
        if args.tests:
            code, seconds, log = run(install_and_test, repo, env)
            last = log.strip().splitlines()[-1] if log.strip() else ""
            result["tests"] = {"exit": code, "seconds": round(seconds, 1), "summary": last}
            ok = ok and code == 0
    print(json.dumps(result, indent=2))
    print("quick start: " + ("works" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
