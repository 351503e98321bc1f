"""How far the OAT plans are from their marginals, per ott Sinkhorn budget (issue 14, item 7).

    python experiments/plan_marginal_error.py [--config recgoat] [--epochs 0 2]

For the config's model on its data (default: the packaged `recgoat` preset on synthetic
`small`), takes the parameters at initialisation and after each of the `--epochs` counts
(trained as a run would), computes each modality's [d, d] cost from the deterministic forward
pass, and solves it with ott (the config's own ott options, e.g. `model.oat.cost_norm`; see
`base_options`) at several budgets: fixed iteration counts (min_iterations == iterations, like
the default) and threshold-stopped runs. Prints the relative marginal error
(`plan_diagnostics`' relative_error: max |sum / target - 1| over rows and columns), the
iterations run, and the solve time. ``--out PAGE.md`` also writes what it prints to a page
with the command, the date and the git commit (experiments/results/ot_iterations.md, the
measurement behind the default's iteration count).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np
from ott.geometry import geometry

from recgoat_jax import config as C
from recgoat_jax.data.load import load_dataset
from recgoat_jax.models.registry import recgoat_module
from recgoat_jax.ot.cost import feature_cost
from recgoat_jax.ot.plan import COST_NORMS, PlanOptions, ott_output, plan_diagnostics
from recgoat_jax.train.loop import Trainer

BUDGETS = [dict(iterations=n, min_iterations=n) for n in (100, 200, 500, 1000, 2000)] + [
    dict(iterations=2000, threshold=t, min_iterations=0) for t in (1e-2, 1e-3, 1e-4)]


def costs(trainer: Trainer, params) -> dict[str, np.ndarray]:
    """{modality: [d, d] cost} of the deterministic forward pass at `params`."""
    cfg, ds = trainer.cfg, trainer.dataset
    inputs = trainer.model.inputs
    module = recgoat_module(cfg, ds.n_users, ds.n_items, tuple(sorted(inputs["features"])),
                            tuple(sorted(inputs.get("user_features", {}))))
    out = module.apply({"params": params}, inputs, deterministic=True)
    return {m: feature_cost(z, out["z_item_cf"], cfg.model.oat.cost_scale)
            for m, z in out["z_modal"].items()}


def base_options(oat: C.OATConfig) -> PlanOptions:
    """The config's ott solve (epsilon, cost_norm, epsilon schedule, momentum, Anderson,
    tau_a / tau_b, plan_scale) with no gradient; `BUDGETS` then sets the iterations and the
    stopping rule. A non-ott config's epsilon and plan_scale are solved with ott."""
    fields = {f.name for f in dataclasses.fields(PlanOptions)} - {"solver", "plan_grad", "rank"}
    options = {k: v for k, v in dataclasses.asdict(oat).items() if k in fields}
    if oat.solver != "ott":  # keep only what the ott solve shares with that solver
        options = {k: options[k] for k in ("epsilon", "plan_scale")}
    return PlanOptions(solver="ott", plan_grad="stop", **options)


LINES: list[str] = []  # everything printed, for --out


def say(line: str) -> None:
    print(line)
    LINES.append(line)


def report(label: str, cost_by_modality: dict, base: PlanOptions) -> None:
    for m, cost in cost_by_modality.items():
        spread = float(cost.max() - cost.min())
        solved = geometry.Geometry(cost_matrix=cost,  # the cost as ott solves it (cost_norm)
                                   scale_cost=COST_NORMS[base.cost_norm]).cost_matrix
        solved_spread = float(solved.max() - solved.min())
        say(f"{label} {m}: cost spread {spread:.3g} ({solved_spread / base.epsilon:.0f} epsilon"
            f"{'' if base.cost_norm == 'none' else f', cost_norm {base.cost_norm}'})")
        for budget in BUDGETS:
            options = dataclasses.replace(base, **budget)
            start = time.perf_counter()
            out = ott_output(cost, options)
            plan = out.matrix * (cost.shape[0] if options.plan_scale == "dim" else 1)
            error = float(plan_diagnostics(plan, options.plan_scale)["relative_error"])
            seconds = time.perf_counter() - start
            stop = (f"threshold {options.threshold:g}" if options.min_iterations == 0
                    else "fixed")
            say(f"  {stop:>16} max {options.iterations:>5}: ran {int(out.n_iters):>5}, "
                  f"relative marginal error {error:.2e} ({seconds:.2f} s)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recgoat")
    p.add_argument("--epochs", type=int, nargs="*", default=[2],
                   help="also measure after these many training epochs (ascending)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--out", help="also write the output to this Markdown page")
    args = p.parse_args(argv)
    cfg = C.load(args.config, args.set)
    trainer = Trainer(cfg, load_dataset(cfg.data))
    state = trainer.init_state()
    plan = base_options(cfg.model.oat)
    report("init", costs(trainer, jax.device_get(state.params)), plan)
    done = 0
    for epochs in args.epochs:
        if epochs <= done:  # 0: the initialisation, reported above
            continue
        for _ in range(epochs - done):
            state, stats, _ = trainer.train_epoch(state)
        done = epochs
        say(f"after {done} epochs (training forward, dropout on, last batch): logged "
              + ", ".join(f"{k} {v:.3g}" for k, v in stats.items() if k.startswith("plan_")))
        report(f"epoch {done}", costs(trainer, jax.device_get(state.params)), plan)
    if args.out:
        write_page(Path(args.out), argv if argv is not None else sys.argv[1:])


def write_page(path: Path, argv: list[str]) -> None:
    from recgoat_jax.io_utils import atomic_write_text
    from recgoat_jax.train.run_dir import provenance

    command = shlex.join(["python", "experiments/plan_marginal_error.py", *argv])
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(path, "\n".join([
        "# Marginal error of the OAT plans per ott Sinkhorn budget", "",
        "Relative marginal error: max |sum / target - 1| over the plan's rows and columns, of "
        "each modality's [d, d] plan from the deterministic forward pass at the parameters "
        "after the stated number of training epochs (the `logged` line is what the training "
        "run itself logged for its last batch).", "",
        "```", *LINES, "```", "",
        f"Command: `{command}`  ", f"Git commit: {provenance([])['git_commit']}  ",
        f"Date: {date}", ""]))


if __name__ == "__main__":
    main()
