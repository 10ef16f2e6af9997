"""A rank lost during distributed training: the survivor stops with a clear error.

Two gloo ranks are spawned with torch.multiprocessing and train with ``latentae.fit``;
once both have trained a few steps (and rank 0 has written a checkpoint) the parent kills
one rank with SIGKILL, or stops it with SIGSTOP (a hung rank or an unreachable host). The
survivor's next collective fails, at once when the peer's connection closes, else after the
process group's timeout, and fit must turn that into a ``latentae.dae.LostRankError``
naming the lost rank, the step and the last checkpoint: it must never hang. Run time: about
15 s on 2 idle cores, 25 s under load (each spawn imports torch and latentae in two workers).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import latentae as lae
from latentae.corruption import Gaussian
from latentae.dae import LostRankError, _lost_contact, _lost_rank_error

# The process group's timeout: the longest a survivor could wait if the dead rank's
# connection did not close (a hung peer). The survivor must stop within BOUND_S of the kill.
PG_TIMEOUT_S = 20
BOUND_S = 60
# The timeout in the hung-rank case: long enough for the two workers' rendezvous on a busy
# machine (they start together), short enough to keep the test quick.
HUNG_TIMEOUT_S = 8
CHECKPOINT_EVERY = 10
# Read-outs call the callback; both ranks mark that they train once past this step.
MARK_STEP = 2 * CHECKPOINT_EVERY


def _worker(rank: int, world: int, init_file: str, out: str, timeout_s: float) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=timeout_s))  # fmt: skip
    outcome: dict = {"rank": rank}
    try:
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(0)
        encoder = lae.GaussianEncoder(3, 2, hidden=(8,), noise=0.1)
        decoder = lae.GaussianDecoder(2, 3, hidden=(8,))
        x = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))

        def mark(step: int, loss: float) -> None:
            if step >= MARK_STEP:
                Path(out, f"training{rank}").touch()

        try:
            # Far more steps than the test waits for: only a lost rank ends this run.
            lae.fit(encoder, decoder, x, Gaussian(0.3), steps=10**7, batch_size=32,
                    validation=None, progress=False, log_every=5, callback=mark,
                    checkpoint=Path(out, "run.pt"), checkpoint_every=CHECKPOINT_EVERY)  # fmt: skip
            outcome["error"] = None
        except BaseException as e:
            outcome.update(error=type(e).__name__, message=str(e), time=time.time())
            if isinstance(e, LostRankError):
                outcome.update(step=e.step, lost=e.rank, checkpoint=str(e.checkpoint))
        Path(out, f"outcome{rank}.json").write_text(json.dumps(outcome))
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's shutdown, where torch 2.13's gloo backend now and then
    # aborts the process (see tests/test_dae.py): the outcome is on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _wait_for(condition, seconds: float, what: str, context) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {seconds} s")
        if any(not p.is_alive() for p in context.processes):
            pytest.fail(f"a worker exited before {what}: exit codes "
                        f"{[p.exitcode for p in context.processes]}")  # fmt: skip
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("victim", "how", "timeout_s"),
    [
        (1, signal.SIGKILL, PG_TIMEOUT_S),
        # A stopped rank keeps its connections open, like an unreachable host: the survivor
        # waits out the process group's timeout, kept short here, then stops. Rank 0 is the
        # one that writes checkpoints, so the survivor reads the last one's step from disk.
        (0, signal.SIGSTOP, HUNG_TIMEOUT_S),
    ],
    ids=["rank-1-killed", "rank-0-hung"],
)
def test_survivor_of_a_lost_rank_stops_with_a_clear_error(tmp_path, victim, how, timeout_s):
    survivor = 1 - victim
    args = (2, str(tmp_path / "init"), str(tmp_path), timeout_s)
    context = mp.spawn(_worker, args=args, nprocs=2, join=False)
    try:
        _wait_for(
            lambda: all((tmp_path / f"training{r}").exists() for r in (0, 1)),
            120,
            "both ranks trained past step 20",
            context,
        )
        os.kill(context.processes[victim].pid, how)
        killed = time.time()
        context.processes[survivor].join(BOUND_S)
        assert not context.processes[survivor].is_alive(), (
            f"rank {survivor} still runs {BOUND_S} s after rank {victim} was killed"
        )
        waited = time.time() - killed
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()  # SIGKILL ends a stopped process too
            p.join(10)
    assert context.processes[survivor].exitcode == 0
    outcome = json.loads((tmp_path / f"outcome{survivor}.json").read_text())
    assert outcome["error"] == "LostRankError", outcome
    assert outcome["time"] - killed < BOUND_S and waited < BOUND_S
    if how == signal.SIGSTOP:  # the timeout, not a closed connection, ended the wait
        # gloo words it "Timed out waiting ..." or "Application timeout caused pair closure",
        # depending on whether the survivor was sending or receiving when the timeout hit.
        assert waited >= timeout_s - 1
        assert re.search("timed out|timeout", outcome["message"], re.IGNORECASE), outcome
    assert outcome["lost"] == victim
    assert outcome["step"] >= MARK_STEP
    checkpoint = tmp_path / "run.pt"
    saved = lae.load_checkpoint(checkpoint)["step"]
    assert outcome["checkpoint"] == str(checkpoint)
    assert saved >= CHECKPOINT_EVERY and saved % CHECKPOINT_EVERY == 0
    message = outcome["message"]
    assert message.startswith(
        f"lost contact with rank {victim} at step {outcome['step']} (a rank died or the "
        "network failed: "
    ), message
    assert f"the last checkpoint is {str(checkpoint)!r} (step {saved})" in message
    assert message.endswith("restart all ranks with resume=True (latentae's CLI: --resume)")


# Errors as torch 2.13's gloo backend raises them (plain RuntimeErrors), seen in a killed and
# in a stopped (SIGSTOP) peer.
CLOSED = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
    "[127.0.0.1]:160. This is typically caused by a remote worker crashing. Check the logs "
    "of the remote worker before reporting an error."
)
TIMED_OUT = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
    "5000ms for recv operation to complete"
)
# What a survivor of a stopped peer may see instead, depending on which side times out first.
PAIR_CLOSED = "Application timeout caused pair closure"


def test_communication_failures_are_told_from_model_errors():
    assert _lost_contact(RuntimeError(CLOSED))
    assert _lost_contact(RuntimeError(TIMED_OUT))
    assert _lost_contact(RuntimeError(PAIR_CLOSED))
    assert _lost_contact(dist.DistBackendError("NCCL communicator was aborted"))
    assert not _lost_contact(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not _lost_contact(ValueError("Expected parameter loc to satisfy the constraint"))


def test_lost_rank_messages(tmp_path):
    e = _lost_rank_error(RuntimeError(TIMED_OUT), 4, 2, 17, None)
    assert isinstance(e, RuntimeError) and (e.step, e.rank, e.checkpoint) == (17, None, None)
    assert str(e) == (
        "lost contact with another of the 4 ranks at step 17 (a rank died or the network "
        "failed: Timed out waiting 5000ms for recv operation to complete); no checkpoint was "
        "being written (pass checkpoint=PATH to be able to resume); restart all ranks with "
        "resume=True (latentae's CLI: --resume)"
    )
    path = tmp_path / "run.pt"
    e = _lost_rank_error(RuntimeError(CLOSED), 2, 0, 5, path)
    assert (e.rank, e.checkpoint) == (1, None)
    assert "(a rank died or the network failed: Connection closed by peer [127.0.0.1]:160);" in (
        str(e)
    )
    assert f"no checkpoint was written yet to {str(path)!r};" in str(e)
    path.write_bytes(b"torn")
    e = _lost_rank_error(RuntimeError(CLOSED), 2, 1, 5, path)
    assert e.rank == 0 and e.checkpoint == path
    assert f"the last checkpoint is {str(path)!r} (step unreadable);" in str(e)
