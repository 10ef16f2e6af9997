"""Training an encoder and a decoder as a denoising autoencoder (eq. 14.14 of *Deep Learning*).

x comes from the data, x̃ ~ C(x̃ | x), h ~ q(h | x̃), and the pair minimizes
-log p_dec(x | h). Trained this way the two maps become conditionals of one joint as data and
capacity grow (Alain et al. 2015): the optimal decoder is the exact q(x | h) of
p_data(x) p_enc(h | x).
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler
from tqdm.auto import tqdm

from latentae._util import check_finite, seeded
from latentae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from latentae.corruption import Corruption
from latentae.rows import CHUNK, split

__all__ = ["DAELoss", "FitResult", "LostRankError", "TrainingInterrupted", "fit"]

# Settings whose change would make a resumed run differ from the interrupted one.
_RESUME_KEYS = (
    "steps", "batch_size", "corruption", "walkback", "seed", "optimizer", "lr",
    "weight_decay", "schedule", "world_size", "train_rows", "encoder", "decoder",
)  # fmt: skip


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint (when one was asked for).

    Attributes:
        step: optimizer steps completed.
        checkpoint: path of the checkpoint written, or ``None``.
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


class LostRankError(RuntimeError):
    """Distributed training lost contact with another rank: it died, hung past the process
    group's timeout, or the network failed. Restart every rank with ``resume=True``.

    Attributes:
        step: optimizer steps this rank had completed.
        rank: the rank that was lost, when it can be told (two ranks), else ``None``.
        checkpoint: the last checkpoint on disk, or ``None``.
    """

    def __init__(self, message: str, step: int, rank: int | None, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.rank, self.checkpoint = step, rank, checkpoint


@dataclass
class FitResult:
    """What [`fit`][] returns.

    Attributes:
        encoder: the trained encoder q(h | x̃) (the module passed in, trained in place).
        decoder: the trained decoder p_dec(x | h).
        history: ``{"step": [...], "loss": [...]}``, the training loss after every step.
        validation: ``{"step": [...], "nll": [...]}``, held-out -log p_dec(x | h) per row.
        steps: optimizer steps taken in all (including those before a resume).
        seconds: wall time of this call.
        checkpoint: the checkpoint file, if any.
        config: the settings of the run.
    """

    encoder: nn.Module
    decoder: nn.Module
    history: dict[str, list] = field(default_factory=dict)
    validation: dict[str, list] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


class DAELoss(nn.Module):
    """The denoising criterion: E -log p_dec(x | h) with x̃ ~ C(x̃ | x), h ~ q(h | x̃).

    h is reparametrized when the encoder's distribution allows (``rsample``); otherwise the
    encoder gets a score-function gradient with the batch mean as baseline. With
    ``walkback = k`` (Bengio et al. 2013) the chain x̃ → h → x* ~ p_dec → x̃* ~ C(x*) is run k
    steps further and each visited h is also trained to reconstruct the original x, which
    removes spurious modes far from the data.

    Examples:
        >>> from latentae.conditionals import GaussianConditional
        >>> from latentae.corruption import Gaussian
        >>> loss = DAELoss(GaussianConditional(3, 2), GaussianConditional(2, 3), Gaussian(0.1))
        >>> loss(torch.randn(8, 3)).shape
        torch.Size([])
    """

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, corruption: Corruption, walkback: int = 0
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.corruption, self.walkback = corruption, walkback

    def forward(self, x: Tensor) -> Tensor:
        x_tilde = self.corruption.sample(x)
        total: Tensor | float = 0.0
        for j in range(self.walkback + 1):
            q = self.encoder(x_tilde)
            if q.has_rsample:
                h, log_q = q.rsample(), None
            else:
                h = q.sample()
                log_q = q.log_prob(h)
            nll = -self.decoder(h).log_prob(x)
            loss = nll.mean()
            if log_q is not None:
                advantage = nll.detach() - nll.detach().mean()
                loss = loss + (advantage * log_q).mean()
            total = total + loss
            if j < self.walkback:
                with torch.no_grad():
                    x_tilde = self.corruption.sample(self.decoder(h).sample())
        return total / (self.walkback + 1) if self.walkback else total


def _feature_check(x: Tensor, encoder: nn.Module, decoder: nn.Module) -> None:
    width = math.prod(x.shape[1:])
    for module, attr, role in (
        (encoder, "context_dim", "encoder"),
        (decoder, "event_dim", "decoder"),
    ):
        expected = getattr(module, attr, None)
        if isinstance(expected, int) and expected != width:
            raise ValueError(
                f"data rows have {width} features but the {role} expects {expected} "
                f"(its {attr}); build the {role} for {width}-dimensional x"
            )


def _optimizer(name: str | Callable, params: list[nn.Parameter], lr: float, weight_decay: float):
    if callable(name):
        return name(params)
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if name not in classes:
        raise ValueError(f"optimizer must be one of {sorted(classes)} or a callable, got {name!r}")
    return classes[name](params, lr=lr, weight_decay=weight_decay)


def _schedule(name: str | Callable | None, optimizer, steps: int):
    if name is None or name == "constant":
        return None
    if callable(name):
        return name(optimizer)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    if name == "linear":
        return torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=steps)
    raise ValueError(
        f"schedule must be None, 'constant', 'cosine', 'linear' or a callable, got {name!r}"
    )


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _Signals:
    """Turns SIGINT/SIGTERM into a flag that the training loop checks after each step, so
    that it can write a checkpoint before stopping. A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _world() -> tuple[int, int, bool]:
    """(world size, rank, whether this call initialized the process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return dist.get_world_size(), dist.get_rank(), True
    return 1, 0, False


# What gloo and NCCL say when a peer's connection closes or a collective times out. torch
# raises some of these as plain RuntimeErrors rather than DistError, so the text decides:
# e.g. gloo's "Application timeout caused pair closure" when a hung peer outlasts the timeout.
_LOST_CONTACT = re.compile(
    r"gloo|nccl|connection (closed|reset|refused)|broken pipe|timed out|timeout|pair closure"
    r"|socket",
    re.IGNORECASE,
)


def _lost_contact(error: BaseException) -> bool:
    """Whether ``error``, raised while training across ranks, is a failed collective."""
    return isinstance(error, dist.DistError) or bool(_LOST_CONTACT.search(str(error)))


def _lost_rank_error(
    error: BaseException, world: int, rank: int, step: int, path: Path | None
) -> LostRankError:
    """The error that says which rank was lost, where training stood and how to go on."""
    lost = 1 - rank if world == 2 else None
    who = f"rank {lost}" if lost is not None else f"another of the {world} ranks"
    kept = path if path is not None and path.is_file() else None
    if path is None:
        where = "no checkpoint was being written (pass checkpoint=PATH to be able to resume)"
    elif kept is None:
        where = f"no checkpoint was written yet to {str(path)!r}"
    else:
        # The step comes from the file itself: rank 0 may have died writing a newer one.
        try:
            saved = torch.load(kept, map_location="cpu", weights_only=True, mmap=True)["step"]
        except Exception:
            saved = "unreadable"
        where = f"the last checkpoint is {str(kept)!r} (step {saved})"
    # The backend's own words, without its source location and its advice.
    lines = str(error).strip().splitlines()
    detail = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(error).__name__
    detail = detail.split(". This is typically")[0]
    return LostRankError(
        f"lost contact with {who} at step {step} (a rank died or the network failed: "
        f"{detail}); {where}; restart all ranks with resume=True (latentae's CLI: --resume)",
        step,
        lost,
        kept,
    )


def _rng_state(cuda: bool) -> dict[str, Any]:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else [],
    }


def _set_rng_state(state: dict[str, Any], cuda: bool) -> None:
    torch.set_rng_state(state["cpu"])
    if cuda and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    encoder: nn.Module,
    decoder: nn.Module,
    data: Tensor | np.ndarray | Dataset | Iterable,
    corruption: Corruption,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    optimizer: str | Callable = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | Callable | None = None,
    walkback: int = 0,
    validation: float | Tensor | None = 0.1,
    val_every: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train ``encoder`` q(h|x̃) and ``decoder`` p_dec(x|h) as a denoising autoencoder.

    Minibatch SGD on -log p_dec(x | h), h ~ q(h | x̃), x̃ ~ C(x̃ | x) (eq. 14.14), with an
    optional walkback, a held-out validation NLL, a tqdm progress bar, atomic checkpoints
    that resume exactly, and SIGINT/SIGTERM handling that writes a checkpoint before stopping.
    Under ``torchrun`` (or an initialized ``torch.distributed`` process group) each rank
    reads its own shard of every global batch through a ``DistributedSampler`` and the
    gradients are averaged by ``DistributedDataParallel``; rank 0 alone writes files and
    shows progress.

    Args:
        encoder: a Conditional q(h | x̃), e.g. [`latentae.GaussianEncoder`][].
        decoder: a Conditional p_dec(x | h).
        data: rows as examples: a tensor, a numpy array (a memory-mapped ``.npy`` is read
            batch by batch, never whole), a map-style ``Dataset``, or a ``DataLoader`` /
            iterable of batches (used as given; then no validation split is made).
        corruption: C(x̃ | x), e.g. ``latentae.corruption.Gaussian(0.5)``.
        steps: optimizer steps; or give ``epochs`` (passes over the training rows).
        batch_size: the global batch size (split evenly across ranks).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``params -> Optimizer``.
        lr: learning rate.
        weight_decay: weight decay of the built-in optimizers.
        schedule: ``None``/``"constant"``, ``"cosine"``, ``"linear"`` (to zero), or
            ``optimizer -> LRScheduler`` (stepped once per optimizer step).
        walkback: extra walkback steps per example (0: plain DAE).
        validation: fraction of rows held out, a tensor of held-out rows, or ``None``.
        val_every: steps between validation scores (default: 20 per run).
        device: where to train; the modules are moved there, batches are moved one at a time.
        seed: seed of the initialization-independent randomness (shuffling, corruption,
            sampling h); each rank adds its rank.
        checkpoint: file to write every ``checkpoint_every`` steps, at the end and on an
            interruption.
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` if it exists (bit for bit on the CPU).
        progress: show a progress bar (hidden when not on a terminal).
        log_every: steps between loss read-outs (a device sync) and finiteness checks.
        callback: called as ``callback(step, loss)`` at each read-out.

    Returns:
        A [`FitResult`][].

    Raises:
        ValueError: bad arguments, data of the wrong width, non-finite data (the row and
            column are named), or a checkpoint from a different run.
        FloatingPointError: the loss became non-finite; the last good checkpoint is kept.
        TrainingInterrupted: SIGINT/SIGTERM arrived; the checkpoint was written first.
        LostRankError: under torch.distributed, another rank died, hung or became
            unreachable. With gloo a dead rank is noticed at the next collective, within a
            step; a hung or unreachable one only after the process group's timeout (torch's
            default: 30 minutes for gloo, 10 for NCCL, whose watchdog may end the process
            itself). To bound the wait, initialize the group yourself before calling fit,
            e.g. ``torch.distributed.init_process_group("gloo", timeout=timedelta(minutes=2))``.
            No checkpoint is written then (it would need every rank's RNG state); the
            message names the last one.

    Examples:
        >>> import latentae as lae
        >>> from latentae.corruption import Gaussian
        >>> x = torch.randn(256, 3)
        >>> enc, dec = lae.GaussianConditional(3, 2), lae.GaussianConditional(2, 3)
        >>> result = lae.fit(enc, dec, x, Gaussian(0.3), steps=20, batch_size=64, progress=False)
        >>> len(result.history["loss"]), result.steps
        (20, 20)
    """
    start_time = time.perf_counter()
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps=... or epochs=...")
    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
                        ("log_every", log_every)):  # fmt: skip
        _positive(name, value)
    if not isinstance(walkback, int) or walkback < 0:
        raise ValueError(f"walkback must be a non-negative integer, got {walkback!r}")
    if not isinstance(corruption, Corruption):
        raise TypeError(
            f"corruption must be a latentae.corruption.Corruption, got {type(corruption).__name__}"
        )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH, the file to resume from")
    world, rank, own_group = _world()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not split evenly across {world} ranks")
    local_batch = batch_size // world
    if device is None:
        device = next(encoder.parameters(), torch.zeros(())).device
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    encoder.to(device)
    decoder.to(device)
    params = list(dict.fromkeys([*encoder.parameters(), *decoder.parameters()]))
    if not params:
        raise ValueError("the encoder and decoder have no parameters to train")
    dtype = params[0].dtype
    cuda = device.type == "cuda"

    rows, val_x = split(data, validation, seed)
    if rows is not None:
        if len(rows) < local_batch * world:
            raise ValueError(
                f"batch_size {batch_size} is larger than the {len(rows)} training rows"
            )
        _feature_check(rows.take(torch.arange(1)), encoder, decoder)
        n_rows = len(rows)
        sampler = DistributedSampler(range(n_rows), world, rank, shuffle=True, seed=seed)
        per_epoch = len(sampler) // local_batch
    elif world > 1:
        raise ValueError(
            "under torch.distributed pass the data as a tensor, array or Dataset, so that "
            "each rank reads its own shard; a DataLoader or iterable would be read whole by "
            "every rank"
        )
    else:
        per_epoch = len(data) if hasattr(data, "__len__") else None
    if steps is None:
        _positive("epochs", epochs)
        if per_epoch is None:
            raise ValueError("epochs=... needs data of known length; give steps=... instead")
        steps = epochs * per_epoch
    _positive("steps", steps)
    # About 20 scores per run, but never more often than one pass over the validation rows
    # costs in training batches, so that scoring stays a small part of a short run.
    n_val = len(val_x) if val_x is not None else 0
    val_every = val_every or max(1, steps // 20, math.ceil(n_val / batch_size))
    if val_x is not None:
        check_finite(val_x, "the validation data")
        val_x = val_x.to(device=device, dtype=dtype)
        val_x = val_x.flatten(1) if val_x.dim() > 2 else val_x

    config = {
        "steps": steps, "batch_size": batch_size, "corruption": corruption.to_config(),
        "walkback": walkback, "seed": seed,
        "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
        "lr": lr, "weight_decay": weight_decay,
        "schedule": schedule if schedule is None or isinstance(schedule, str) else repr(schedule),
        "world_size": world, "train_rows": len(rows) if rows is not None else None,
        "encoder": _unit_config(encoder), "decoder": _unit_config(decoder),
    }  # fmt: skip
    loss_module = DAELoss(encoder, decoder, corruption, walkback)
    model: nn.Module = loss_module
    opt = _optimizer(optimizer, params, lr, weight_decay)
    sched = _schedule(schedule, opt, steps)
    history: dict[str, list] = {"step": [], "loss": []}
    val_history: dict[str, list] = {"step": [], "nll": []}
    path = Path(checkpoint) if checkpoint is not None else None
    start_step, restored_rng = 0, None
    if resume and path is not None and path.exists():
        state = load_checkpoint(path)
        _check_resume(state["config"], config, path)
        for role, module in (("encoder", encoder), ("decoder", decoder)):
            try:
                module.load_state_dict(state[role])
            except RuntimeError as e:
                raise CheckpointError(
                    f"the {role} in checkpoint {str(path)!r} does not fit this "
                    f"{type(module).__name__}: {str(e).splitlines()[0]} (build the {role} "
                    "with the sizes of the interrupted run)"
                ) from None
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        history = {k: list(v) for k, v in state["history"].items()}
        val_history = {k: list(v) for k, v in state["validation"].items()}
        start_step, restored_rng = state["step"], state["rng"][rank]

    def write(step: int) -> None:
        rng = _rng_state(cuda)
        states = [None] * world
        if world > 1:
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if rank == 0 and path is not None:
            save_checkpoint(path, {
                "step": step, "config": config,
                "encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "rng": states, "history": history, "validation": val_history,
            })  # fmt: skip

    def validate(step: int) -> None:
        if val_x is None:
            return
        # A fork of the RNG: scoring never moves the training stream, so resuming is exact.
        with seeded(seed + 1_000_003), torch.no_grad():
            total = 0.0
            for chunk in val_x.split(CHUNK):
                x_tilde = corruption.sample(chunk)
                q = encoder(x_tilde)
                total += float(-decoder(q.sample()).log_prob(chunk).sum())
        val_history["step"].append(step)
        val_history["nll"].append(total / len(val_x))

    pending: list[Tensor] = []
    last_good = start_step

    def kept() -> str:
        if path is not None and path.exists():
            return f"the last good checkpoint {str(path)!r} (step {last_good}) is kept"
        return "no checkpoint was written"

    def diverged(step: int) -> None:
        """Distributions refuse NaN parameters with their own error: if training diverged,
        raise the error that says so (the pending losses name the step)."""
        flush(step)
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise FloatingPointError(
                f"the parameters became non-finite by step {step}; {kept()}; lower the "
                "learning rate or check the data"
            ) from None

    def flush(step: int) -> None:
        nonlocal last_good
        if not pending:
            return
        values = torch.stack(pending).tolist()
        first = step - len(values) + 1
        pending.clear()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the DAE loss became non-finite ({value}) at step {first + offset}; "
                    f"{kept()}; lower the learning rate or check the data and corruption"
                )
        history["step"].extend(range(first, step + 1))
        history["loss"].extend(values)
        if callback is not None:
            callback(step, values[-1])

    bar = tqdm(total=steps, initial=start_step, desc="DAE", unit="step",
               disable=None if progress and rank == 0 else True)  # fmt: skip
    batches = iter(()) if rows is None else None
    step = start_step
    try:
        if world > 1:  # its constructor is the first collective: a lost rank shows here
            model = DistributedDataParallel(
                loss_module, device_ids=[device.index] if cuda else None
            )
        with seeded(seed + rank), _Signals() as signals:
            if restored_rng is not None:
                _set_rng_state(restored_rng, cuda)
            loss_module.train()
            shard, epoch = None, -1
            step = start_step
            while step < steps:
                if rows is not None:
                    e, k = divmod(step, per_epoch)
                    if e != epoch:
                        sampler.set_epoch(e)
                        # One process: DistributedSampler's own order, without its list.
                        order = torch.randperm(
                            n_rows, generator=torch.Generator().manual_seed(seed + e)
                        )
                        shard = order if world == 1 else torch.tensor(list(sampler))
                        epoch = e
                    x = rows.take(shard[k * local_batch : (k + 1) * local_batch])
                else:
                    try:
                        x = next(batches)
                    except StopIteration:
                        batches = iter(data)
                        x = next(batches)
                    x = torch.as_tensor(x[0] if isinstance(x, list | tuple) else x)
                    check_finite(x, f"batch {step} of the data")
                x = x.to(device=device, dtype=dtype, non_blocking=True)
                if x.dim() > 2:
                    x = x.flatten(1)
                try:
                    loss = model(x)
                except (ValueError, RuntimeError) as e:
                    if not (world > 1 and _lost_contact(e)):
                        diverged(step)
                    raise
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                pending.append(loss.detach())
                step += 1
                bar.update()
                stop = signals.received is not None
                if world > 1 and (step % log_every == 0 or step == steps):
                    flag = torch.tensor([float(stop)], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop = bool(flag.item())
                elif world > 1:
                    stop = False  # ranks stop together, at a read-out step
                if step % log_every == 0 or step == steps or stop:
                    flush(step)
                    bar.set_postfix(loss=f"{history['loss'][-1]:.4g}")
                if step % val_every == 0 or step == steps:
                    try:
                        validate(step)
                    except (ValueError, RuntimeError):
                        diverged(step)
                        raise
                if step % checkpoint_every == 0 or step == steps or stop:
                    flush(step)
                    write(step)
                    last_good = step
                if stop:
                    where = f"; checkpoint written to {str(path)!r}" if path else ""
                    raise TrainingInterrupted(
                        f"training interrupted by {signals.received or 'another rank'} at "
                        f"step {step}{where}; call again with resume=True to continue",
                        step,
                        path,
                    )
        if own_group and world > 1:
            # The ranks tear the group down together: one that leaves while rank 0 still
            # writes the last checkpoint can abort in gloo's teardown ("terminate called
            # without an active exception").
            dist.barrier()
    except RuntimeError as e:
        # A dead or hung rank makes the next collective (DDP's buffer broadcast or gradient
        # all-reduce, the stop-flag all-reduce, the RNG-state gather) fail on every survivor:
        # at once when the peer's connection closes, else after the process group's timeout.
        if world > 1 and _lost_contact(e) and not isinstance(e, LostRankError):
            raise _lost_rank_error(e, world, rank, step, path) from e
        raise
    finally:
        bar.close()
        if own_group:
            dist.destroy_process_group()
    loss_module.eval()
    return FitResult(
        encoder,
        decoder,
        history,
        val_history,
        steps,
        time.perf_counter() - start_time,
        path,
        config,
    )


def _unit_config(unit: nn.Module) -> Any:
    """A unit's ``to_config()`` (so a checkpoint says how to rebuild it), else its class name."""
    to_config = getattr(unit, "to_config", None)
    return to_config() if callable(to_config) else type(unit).__name__


def _check_resume(saved: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    for key in _RESUME_KEYS:
        if saved.get(key) != config.get(key):
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with {key}={saved.get(key)!r} but this "
                f"run has {key}={config.get(key)!r}; use the same settings to resume, or "
                "another checkpoint path to start a new run"
            )
