"""The denoising autoencoder that ``run`` and ``fit`` train: its defaults, how it is built
for a model, and its part of the reports."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from latentae.corruption import Corruption
    from latentae.dae import FitResult
    from latentae.joint import JointModel

from latentae.cli._common import _finite_or_none, _fmt

# DAE training defaults. 3000 steps of batch 128 is ~200 passes over 2000 rows: enough for
# the loss of the bundled models to flatten, and `latentae run models/ppca.py` stays well
# under a minute on 2 CPU cores.
DEFAULT_STEPS = 3000

DEFAULT_BATCH_SIZE = 128

DEFAULT_LR = 1e-3

DEFAULT_HIDDEN = (64, 64)

# The encoder's injected noise (fig. 14.2), in the code's units.
ENCODER_NOISE = 0.1

# Default corruption: bit flips for binary x; otherwise Gaussian noise at this fraction of
# the data's mean per-feature standard deviation, small enough that x̃ stays near the data
# manifold, so (r(x) - x) / sigma^2 estimates the score (Alain & Bengio 2014).
DEFAULT_BIT_FLIP = 0.1

DEFAULT_SIGMA_FRACTION = 0.1

# A discrete latent has no continuous code to copy: the DAE gets a code this wide.
DISCRETE_CODE_DIM = 2

# Intra-op threads for DAE training on the CPU. Networks of a few thousand weights on batches
# of 128 rows cost less per op than the threads' synchronization: on 2 cores, 1 thread ran
# ppca's DAE at ~1.5 ms/step and 2 threads at ~20 ms/step while the other core was busy.
DEFAULT_THREADS = 1

# Fraction of the training rows that fit() holds out to score the validation NLL.
VALIDATION_FRACTION = 0.1

# The "final" training loss is also reported as the mean over this many last steps.
_FINAL_WINDOW = 100


@dataclass
class _DAEPlan:
    """Everything a DAE training run needs, checked before anything is written."""

    encoder: Any
    decoder: Any
    corruption: Corruption
    corruption_source: str
    x: torch.Tensor
    checkpoint: Path
    resumed_from: int | None


def _spec(corruption: Corruption) -> str:
    """A corruption as --corruption writes it, e.g. ``masking:0.25``."""
    config = corruption.to_config()
    name = config.pop("name")
    return ":".join([name, *(f"{v:g}" for v in config.values())][:2])


def _is_binary(support: Any) -> bool:
    from torch.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return isinstance(support, constraints.boolean.__class__)


def _code_dim(jm: JointModel) -> int:
    """Width of the DAE's code h: the model's latent dimension, or for a discrete latent (a
    label, with no continuous code to copy) a small continuous code."""
    if jm.latent_is_discrete:
        return max(DISCRETE_CODE_DIM, jm.latent_dim)
    return jm.latent_dim


def _default_corruption(jm: JointModel, x: torch.Tensor) -> tuple[Corruption, str]:
    from latentae.corruption import BitFlip, Gaussian

    if _is_binary(jm.observed_support):
        return BitFlip(DEFAULT_BIT_FLIP), "default for binary x"
    spread = float(x.double().std(0).mean())
    sigma = DEFAULT_SIGMA_FRACTION * spread
    if not 0 < sigma < math.inf:
        raise ValueError(
            f"the training data of {jm._where} have no spread (mean feature sd {spread:g}), so "
            "the default Gaussian corruption is undefined; pass --corruption NAME:VALUE"
        )
    source = f"default: {DEFAULT_SIGMA_FRACTION:g} x the mean per-feature sd {spread:.4g}"
    return Gaussian(sigma), source


def _prepare_dae(jm: JointModel, x: torch.Tensor, args: argparse.Namespace, out: Path) -> _DAEPlan:
    """Choose and build the DAE for ``jm``'s training rows ``x``; check the corruption on
    the data and any checkpoint to resume, so that a bad setting fails before training."""
    import torch

    from latentae._util import seeded
    from latentae.checkpoint import load_checkpoint
    from latentae.units import BernoulliDecoder, GaussianDecoder, GaussianEncoder

    if x.shape[0] == 0:
        raise ValueError(
            "no rows are left to train the DAE on; hold out fewer rows (--num-heldout) or "
            "pass --no-dae"
        )
    x = x.reshape(x.shape[0], -1)
    if args.corruption is not None:
        corruption, source = args.corruption, "--corruption"
    else:
        corruption, source = _default_corruption(jm, x)
    x_dim, h_dim = x.shape[1], _code_dim(jm)
    with seeded(args.seed), torch.no_grad():
        try:
            x_tilde = corruption.sample(x)
        except ValueError as e:
            raise ValueError(
                f"--corruption {_spec(corruption)} does not fit the data of {jm._where}: {e}; "
                "or pick another --corruption"
            ) from None
        encoder = GaussianEncoder(x_dim, h_dim, hidden=args.hidden, noise=ENCODER_NOISE)
        if _is_binary(jm.observed_support):
            decoder = BernoulliDecoder(h_dim, x_dim, hidden=args.hidden)
        else:
            decoder = GaussianDecoder(h_dim, x_dim, hidden=args.hidden, cov="diag")
        encoder, decoder = encoder.to(x.dtype), decoder.to(x.dtype)
        # The encoder sees corrupted rows, so it is standardized on them (a feature that is
        # constant in the data is not constant in x~). The decoder's input is the code: it
        # is standardized on the codes the untrained encoder gives, its output on x.
        encoder.standardize(x_tilde)
        decoder.standardize(encoder(x_tilde).sample(), x)
    checkpoint = out / "checkpoint.pt"
    resumed_from = None
    if args.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        # fit() checks the training settings; the networks' shapes are checked here, so a
        # different --hidden gets a plain message instead of load_state_dict's key lists.
        for role, module in (("encoder", encoder), ("decoder", decoder)):
            saved = {k: tuple(v.shape) for k, v in state.get(role, {}).items()}
            built = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            if saved != built:
                raise ValueError(
                    f"the {role} in checkpoint {str(checkpoint)!r} has other shapes than "
                    f"this run's {type(module).__name__} with --hidden "
                    f"{','.join(map(str, args.hidden)) or repr('')}; resume with the "
                    "settings it was written with, or drop --resume to start afresh"
                )
        resumed_from = int(state["step"])
    return _DAEPlan(encoder, decoder, corruption, source, x, checkpoint, resumed_from)


def _unit_info(module: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"class": type(module).__name__}
    for name in ("x_dim", "h_dim", "hidden", "noise", "cov"):
        if hasattr(module, name):
            value = getattr(module, name)
            info[name] = list(value) if isinstance(value, tuple) else value
    info["parameters"] = sum(p.numel() for p in module.parameters())
    return info


def _train_dae(jm: JointModel, plan: _DAEPlan, args: argparse.Namespace) -> dict[str, Any]:
    """Train the planned DAE, write its loss plot, and return its figures for the reports."""
    import torch

    from latentae.dae import fit
    from latentae.plots import loss_curve, save_figure

    threads = torch.get_num_threads()
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads)
    try:
        result = _fit(fit, plan, args)
    finally:
        torch.set_num_threads(threads)
    rows = result.config.get("train_rows")
    title = f"{jm.name}: DAE training"
    if rows is not None:
        title += f" on {rows} rows ({plan.x.shape[0] - rows} for validation)"
    fig = loss_curve(result.history, result.validation)
    fig.axes[0].set_title(title)
    plot = save_figure(fig, plan.checkpoint.parent / "loss.png")
    return _dae_section(result, plan, args, plot)


def _fit(fit: Callable[..., FitResult], plan: _DAEPlan, args: argparse.Namespace) -> FitResult:
    return fit(
        plan.encoder,
        plan.decoder,
        plan.x,
        plan.corruption,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        walkback=args.walkback,
        validation=VALIDATION_FRACTION,
        device=args.device,
        seed=args.seed,
        checkpoint=plan.checkpoint,
        resume=args.resume,
        progress=not args.quiet,
    )


def _dae_section(
    result: FitResult, plan: _DAEPlan, args: argparse.Namespace, plot: Path
) -> dict[str, Any]:
    losses, nll = result.history["loss"], result.validation["nll"]
    done = result.steps - (plan.resumed_from or 0)
    train_rows = result.config.get("train_rows")
    config = {
        **result.config,
        "corruption": {**result.config["corruption"], "source": plan.corruption_source},
        "encoder": _unit_info(plan.encoder),
        "decoder": _unit_info(plan.decoder),
        "validation_fraction": VALIDATION_FRACTION,
        "device": args.device,
        "threads": args.threads,
    }
    return {
        "steps": result.steps,
        "steps_this_run": done,
        "resumed_from_step": plan.resumed_from,
        "final_train_loss": _finite_or_none(losses[-1]) if losses else None,
        "final_train_loss_mean": (
            _finite_or_none(sum(losses[-_FINAL_WINDOW:]) / len(losses[-_FINAL_WINDOW:]))
            if losses
            else None
        ),
        "final_train_loss_window": min(_FINAL_WINDOW, len(losses)),
        "validation_nll": _finite_or_none(nll[-1]) if nll else None,
        "validation_step": result.validation["step"][-1] if nll else None,
        "wall_time_s": round(result.seconds, 4),
        "steps_per_s": round(done / result.seconds, 2) if done and result.seconds > 0 else None,
        "rows": {
            "train": train_rows,
            "validation": plan.x.shape[0] - train_rows if train_rows is not None else None,
            "features": plan.x.shape[1],
        },
        "config": config,
        "definitions": {
            "loss": "-log p_dec(x | h) per row, h ~ q(h | x~), x~ ~ C(x~ | x), per minibatch",
            "validation_nll": "the same on the held-out validation rows, one corruption and "
            "one h per row",
        },
        "checkpoint": str(plan.checkpoint),
        "loss_plot": str(plot),
    }


def _dae_lines(dae: dict[str, Any]) -> list[str]:
    """The DAE part of a printed summary."""
    config = dae["config"]
    enc, dec, c = config["encoder"], config["decoder"], config["corruption"]

    def unit(info: dict[str, Any], inputs: str, outputs: str) -> str:
        hidden = ",".join(map(str, info["hidden"])) or "none (affine)"
        extra = f"; noise {info['noise']:g}" if "noise" in info else ""
        extra += f"; {info['cov']} covariance" if "cov" in info else ""
        return f"{info['class']} {info[inputs]} -> {info[outputs]} (hidden {hidden}{extra})"

    params = ", ".join(f"{k} {v:.4g}" for k, v in c.items() if k not in ("name", "source"))
    lines = [
        f"dae       encoder {unit(enc, 'x_dim', 'h_dim')}",
        f"          decoder {unit(dec, 'h_dim', 'x_dim')}",
        f"          corruption {c['name']} {params} ({c['source']})",
    ]
    rows = dae["rows"]
    setting = f"batch {config['batch_size']}, lr {config['lr']:g}"
    if config["walkback"]:
        setting += f", walkback {config['walkback']}"
    if dae["steps_this_run"] == 0:
        lines.append(
            f"training  checkpoint already at step {dae['steps']} of {dae['steps']}: nothing "
            "left to train, reloaded it"
        )
    else:
        resumed = (
            f" (resumed at step {dae['resumed_from_step']})" if dae["resumed_from_step"] else ""
        )
        lines.append(
            f"training  {dae['steps']} steps{resumed} on {rows['train']} rows ({setting}) in "
            f"{dae['wall_time_s']:.2f} s, {_fmt(dae['steps_per_s'])} steps/s"
        )
    val = (
        f"; validation NLL {_fmt(dae['validation_nll'])} at step {dae['validation_step']} "
        f"({rows['validation']} rows)"
        if dae["validation_nll"] is not None
        else ""
    )
    lines.append(
        f"loss      train {_fmt(dae['final_train_loss'])} at the last step, "
        f"{_fmt(dae['final_train_loss_mean'])} over the last {dae['final_train_loss_window']}"
        f"{val}"
    )
    return lines


def _add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="PATH",
        help="use the DAE pair of this checkpoint (from 'latentae fit' or 'run') instead of "
        "training one; the training flags are then ignored",
    )


def _checkpoint_pair(jm: JointModel, x: torch.Tensor, path: Path, device: str) -> Any:
    """The [`TrainedPair`][latentae.checkpoint.TrainedPair] of checkpoint ``path`` on ``device``,
    checked against the width of the model's rows ``x``."""
    from latentae.checkpoint import load_pair

    pair = load_pair(path)
    x_dim = getattr(pair.encoder, "x_dim", None)
    features = math.prod(x.shape[1:])
    if x_dim is not None and x_dim != features:
        raise ValueError(
            f"the encoder in {str(path)!r} takes rows of {x_dim} features but "
            f"{jm._where} observes {features}; pass the model the checkpoint was trained on"
        )
    return pair._replace(encoder=pair.encoder.to(device), decoder=pair.decoder.to(device))


def _trained_pair(
    jm: JointModel, x: torch.Tensor, args: argparse.Namespace, out: Path
) -> tuple[tuple[Any, Any, Corruption], dict[str, Any] | None]:
    """The DAE pair (encoder, decoder, corruption) for a command: rebuilt from
    ``--checkpoint``, or trained on ``x`` as ``latentae fit`` does (its section returned)."""
    if getattr(args, "checkpoint", None) is not None:
        pair = _checkpoint_pair(jm, x, args.checkpoint, args.device)
        return (pair.encoder, pair.decoder, pair.corruption), None
    plan = _prepare_dae(jm, x, args, out)
    dae = _train_dae(jm, plan, args)
    plan.encoder.eval()
    plan.decoder.eval()
    return (plan.encoder, plan.decoder, plan.corruption), dae


def _pair_command(
    args: argparse.Namespace,
    name: str,
    section: Callable[[Any, tuple[Any, Any, Any], Any, Path], dict[str, Any]],
    produced: Callable[[dict[str, Any]], list[str]],
    lines: Callable[[dict[str, Any]], list[str]],
    *,
    prepare: Callable[[Any, Any], None] | None = None,
    uses_arviz: bool = False,
) -> int:
    """The body of a command that works on a trained DAE pair (``score``, ``sample``): take
    the model's rows, train the pair or load ``--checkpoint``, compute the command's
    ``section`` into ``--out``, and write ``<name>.json`` listing every file written."""
    import json

    from latentae._util import atomic_write_text
    from latentae.cli._common import (
        _import_arviz,
        _model_and_out,
        _model_data,
        _versions,
        _writing,
    )

    jm, out = _model_and_out(args, "the DAE")
    with _writing(out):
        x, source = _model_data(jm, args)
        if prepare is not None:
            prepare(jm, x)
        pair, dae = _trained_pair(jm, x, args, out)
        out.mkdir(parents=True, exist_ok=True)
        result = section(jm, pair, x, out)
        path = out / f"{name}.json"
        files = [] if dae is None else [dae["checkpoint"], dae["loss_plot"]]
        files += [*produced(result), str(path)]
        report = {
            "command": name,
            "model": {"name": jm.name, "path": str(args.model)},
            "data": {"rows": len(x), "source": source},
            "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
            name: result,
            "versions": _versions(_import_arviz() if uses_arviz else None),
            "files": files,
        }
        if dae is not None:
            report["dae"] = dae
        atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")
        if not args.quiet:
            print(f"model     {jm.name} ({args.model})")
            if dae is not None:
                print("\n".join(_dae_lines(dae)))
            print("\n".join(lines(result)))
            print("wrote")
            for file in files:
                print(f"  {file}")
    return 0
