"""Two commands pointed at one --out: the second refuses, the first's files are untouched."""

import subprocess
import sys
import time

from latentae.cli import main
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"
HOLD = """
import sys, time
from latentae.locking import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_a_locked_folder_refuses(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        code = main(["fit", str(PPCA), "--out", str(out), "--steps", "5", "--quiet"])
        _, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1
        assert f"another latentae run (pid {holder.pid}" in err and "--out" in err
        assert time.perf_counter() - start < 10  # refused at once, not after waiting
        assert sorted(p.name for p in out.iterdir()) == [".latentae.lock", "report.json"]
        assert (out / "report.json").read_text() == "{}"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # Once the holder is gone (even killed), the folder can be used again.
    assert main(["fit", str(PPCA), "--out", str(out), "--steps", "5", "--batch-size", "8",
                 "--quiet"]) == 0  # fmt: skip
    assert not (out / ".latentae.lock").exists()


def test_a_failed_run_leaves_no_folder_behind(capsys, tmp_path):
    out = tmp_path / "new"
    code = main(["fit", str(PPCA), "--out", str(out), "--steps", "5", "--batch-size", "100000"])
    assert code == 2 and "batch" in capsys.readouterr().err
    assert not out.exists()
