"""Compute-to-target: the training compute each method needs to bring its forget rate down to a
target, as a share of ppo's: the measured form of the paper's "about 2% of RLHF's compute".

It reads each run's eval_log.jsonl (`--eval-every K`: the forget rate on forget_val, with the
training FLOPs and wall seconds so far, at every K-th step; ppo's curve starts at the cost of
its SFT and reward-model stages):

    reached(run)   = the first evaluated step whose forget_val rate ≤ target and which is within the
                     selection rule's limits (bench/selection.py: utility on normal_val down by at
                     most max_utility_drop from the run's first evaluation, degenerate rate on
                     forget_val at most max_degenerate): its FLOPs and seconds
    target         = --target, or ppo's final forget_val rate (mean over seeds) + tolerance
    share(m, seed) = reached FLOPs of m / reached FLOPs of ppo, at the same seed (× 100%)

The limits are there because a model that breaks stops producing harmful text too: without
them, gradient ascent "reaches" any target by emitting noise. A seed whose rate met the target
only at steps outside the limits is counted apart ("only outside the limits"). ppo's first
evaluation comes after its SFT stage, so its utility drop is measured from there, as
`--select best` measures it.

Shares are reported as the mean ± 95% CI over the seeds where both reached the target; a seed
where the method never got there counts as "not reached". FLOPs are the same on any machine; seconds
are not, so a time share pairs a seed with ppo's only when both ran on the same machine kind (the
CPU or GPU model and features in their records): a comparison resumed on another machine keeps its
FLOP shares and says which time shares it dropped. A point is only as fine as K: the
target is met somewhere between the evaluation before and the one that sees it.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearnbench.metrics import FORGET_RATES

BASELINE = "ppo"


def curve(eval_log: Path) -> list[dict]:
    """[{step, flops, seconds, rate, utility_drop, degenerate}] from one run's eval_log.jsonl
    (forget_val's forget rate; the last two where the log has utility and degenerate rates)."""
    from unlearnbench.selection import outcome

    rows = [json.loads(line) for line in eval_log.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    rate = next((f"forget_val/{m}" for m in FORGET_RATES if f"forget_val/{m}" in rows[0]), None)
    if rate is None:
        return []
    limited = all(k in rows[0] for k in ("normal_val/utility", "forget_val/degenerate_rate"))
    points = []
    for r in rows:
        point = {"step": r["step"], "flops": r["train_flops"], "seconds": r["train_seconds"], "rate": r[rate]}
        if limited:
            measured = outcome(rows[0], r)
            point.update(utility_drop=measured["utility_drop"], degenerate=measured["degenerate"])
        points.append(point)
    return points


def within_limits(point: dict, limits) -> bool:
    """Within the selection rule's limits; without limits, or for a log without utility and
    degenerate rates, every point is."""
    from unlearnbench.selection import feasible

    return limits is None or "utility_drop" not in point or feasible(point, limits)


def reached(points: list[dict], target: float, limits=None) -> dict | None:
    """The first point at or below the target and within the limits."""
    return next((p for p in points if p["rate"] <= target and within_limits(p, limits)), None)


def compute_to_target(runs: dict[str, list[Path]], target: float | None = None, tolerance: float = 0.05,
                      limits=None) -> dict | None:
    """Per method, compute to reach the target and its share of ppo's; None without eval logs.
    `runs` maps a method to its run folders (one per seed, each with config.json); `limits` has
    max_utility_drop and max_degenerate (the selection rule's), or is None for the rate alone."""
    from unlearnbench.stats import summarize

    curves = {m: {seed_of(d): curve(d / "eval_log.jsonl") for d in dirs if (d / "eval_log.jsonl").is_file()}
              for m, dirs in runs.items()}
    curves = {m: {s: c for s, c in by_seed.items() if c} for m, by_seed in curves.items()}
    curves = {m: by_seed for m, by_seed in curves.items() if by_seed}
    if not curves:
        return None
    baseline = curves.get(BASELINE, {})
    how = "given (--target)"
    if target is None:
        if not baseline:
            return {"target": None, "note": "no target: give --target, or compare with ppo and --eval-every"}
        finals = [c[-1]["rate"] for c in baseline.values()]
        target = sum(finals) / len(finals) + tolerance
        how = f"ppo's final forget_val rate, mean over {_seeds(len(finals))}, + {tolerance}"
    base_reached = {s: reached(c, target, limits) for s, c in baseline.items()}
    machines = {m: {seed_of(d): machine_of(d) for d in dirs if (d / "config.json").is_file()} for m, dirs in runs.items()}
    methods = {}
    for method, by_seed in curves.items():
        hits = {s: reached(c, target, limits) for s, c in by_seed.items()}
        row = {"seeds": sorted(by_seed), "reached": sorted(s for s, h in hits.items() if h),
               "not_reached": sorted(s for s, h in hits.items() if not h),
               "only_outside_limits": sorted(s for s, h in hits.items() if not h and reached(by_seed[s], target)),
               "flops": summarize([h["flops"] for h in hits.values() if h]).__dict__,
               "seconds": summarize([h["seconds"] for h in hits.values() if h]).__dict__,
               "steps_at_target": {str(s): h["step"] for s, h in sorted(hits.items()) if h}}
        paired = [s for s, h in hits.items() if h and base_reached.get(s) and base_reached[s]["flops"] > 0]
        if paired:
            row["flops_pct_of_ppo"] = summarize([100 * hits[s]["flops"] / base_reached[s]["flops"] for s in paired]).__dict__
            same_machine = [s for s in paired if base_reached[s]["seconds"] > 0
                            and machines[method].get(s) == machines.get(BASELINE, {}).get(s)]
            row["seconds_pct_of_ppo"] = summarize([100 * hits[s]["seconds"] / base_reached[s]["seconds"]
                                                   for s in same_machine]).__dict__
            row["paired_seeds"] = sorted(paired)
            if len(same_machine) < len(paired):
                row["seconds_unpaired_seeds"] = sorted(set(paired) - set(same_machine))
        methods[method] = row
    kinds = sorted({k for by_seed in machines.values() for k in by_seed.values() if k})
    return {"target": target, "how": how, "methods": methods, "curves": curves, "machines": kinds,
            **({"limits": {"max_utility_drop": limits.max_utility_drop, "max_degenerate": limits.max_degenerate}}
               if limits is not None else {})}


def seed_of(run_dir: Path) -> int:
    return json.loads((run_dir / "config.json").read_text())["config"]["seed"]


def machine_of(run_dir: Path) -> str | None:
    """The machine kind a run's seconds were measured on: its processor, the features that change
    speed, its core count and its GPUs, from the record (None if the record predates them). A run
    resumed on other machines names each, so it pairs with no single-machine run. Seconds depend
    on the cores, so they are part of the kind here; tables.machine_kind groups originals by
    numerics, where they are not."""
    hardware = json.loads((run_dir / "config.json").read_text()).get("environment", {}).get("hardware")
    if not hardware:
        return None
    metrics_file = run_dir / "metrics.json"
    resumed = json.loads(metrics_file.read_text()).get("resumed", []) if metrics_file.is_file() else []
    kinds = [_kind(h) for h in [hardware, *(r["hardware"] for r in resumed if isinstance(r, dict) and r.get("hardware"))]]
    return " + ".join(dict.fromkeys(kinds))


def _kind(hardware: dict) -> str:
    parts = [hardware.get("cpu", "?"), "/".join(hardware.get("cpu_features", [])) or "-",
             f"{hardware.get('cpu_count', '?')} cores", *hardware.get("cuda", [])]
    return ", ".join(str(p) for p in parts)


def cell(summary: dict | None, digits: int = 1, scale: float = 1.0) -> str:
    from unlearnbench.stats import Summary

    if not summary or summary.get("mean") is None:
        return "-"
    return Summary(**summary).format(scale, digits)


def markdown(result: dict) -> list[str]:
    from tabulate import tabulate

    if result.get("target") is None:
        return ["## Compute to target", "", result["note"], ""]
    rows = []
    for method, row in result["methods"].items():
        outside = row.get("only_outside_limits", [])
        rows.append([method, f"{len(row['reached'])} of {len(row['seeds'])}"
                     + (f" ({len(outside)} more only outside the limits)" if outside else ""),
                     ", ".join(f"{seed}: {step}" for seed, step in row.get("steps_at_target", {}).items()) or "-",
                     cell(row["flops"], 3, 1e-12),
                     cell(row.get("flops_pct_of_ppo")), cell(row["seconds"], 0), cell(row.get("seconds_pct_of_ppo"))])
    limits = result.get("limits")
    within = (f", at a step where utility on normal_val is down by at most {limits['max_utility_drop']:.0%} and "
              f"at most {limits['max_degenerate']:.0%} of forget_val answers are degenerate" if limits else "")
    return ["## Compute to target", "",
            f"Target: forget_val rate ≤ {result['target']:.3f} ({result['how']}){within}. Each cell is the mean ± 95% CI "
            "over the seeds that reached it; a share of ppo's pairs each seed with ppo's same seed. Measured at "
            "the --eval-every steps only; ppo's steps are PPO steps, counted after its SFT and reward-model "
            "stages.", "",
            tabulate(rows, headers=["method", "seeds reached", "step reached (seed: step)", "TFLOPs to target", "% of ppo's FLOPs",
                                    "train s to target", "% of ppo's time"], tablefmt="github", disable_numparse=True),
            "", *_machine_lines(result),
            "![forget rate on forget_val against training compute](compute_to_target.png)", ""]


def _machine_lines(result: dict) -> list[str]:
    kinds = result.get("machines", [])
    if len(kinds) < 2:
        return [f"Measured on {kinds[0]}.", ""] if kinds else []
    dropped = {m: row["seconds_unpaired_seeds"] for m, row in result["methods"].items() if row.get("seconds_unpaired_seeds")}
    return [f"The runs come from {len(kinds)} machine kinds ({'; '.join(kinds)}). FLOP shares pair every seed; a "
            "time share only pairs seeds run on the same kind as ppo's"
            + (" (left out: " + ", ".join(f"{m} seeds {', '.join(map(str, s))}" for m, s in dropped.items()) + ")."
               if dropped else "."), ""]


def plot(result: dict, path: Path) -> None:
    """Forget rate on forget_val against training FLOPs: per method the mean over seeds at each
    evaluation, the band between the lowest and highest seed, the target, and a cross at each
    seed's evaluation that the selection rule's limits exclude."""
    from types import SimpleNamespace

    from unlearnbench.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    limits = SimpleNamespace(**result["limits"]) if result.get("limits") else None
    marked = False
    for method, by_seed in result["curves"].items():
        length = min(len(c) for c in by_seed.values())
        points = [[c[i] for c in by_seed.values()] for i in range(length)]
        flops = [sum(p["flops"] for p in at) / len(at) for at in points]
        rates = [[p["rate"] * 100 for p in at] for at in points]
        line, = ax.plot(flops, [sum(r) / len(r) for r in rates], marker=".", label=f"{method} ({_seeds(len(by_seed))})")
        ax.fill_between(flops, [min(r) for r in rates], [max(r) for r in rates], color=line.get_color(), alpha=0.15)
        outside = [p for c in by_seed.values() for p in c if not within_limits(p, limits)]
        if outside:
            ax.scatter([p["flops"] for p in outside], [p["rate"] * 100 for p in outside], marker="x", s=18,
                       color=line.get_color(), linewidths=0.8)
            marked = True
    if result.get("target") is not None:
        ax.axhline(result["target"] * 100, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set_xscale("symlog", linthresh=1e12)
    ax.set_xlim(left=0)  # compute is never negative; symlog would otherwise draw a mirrored axis
    ax.set_xlabel("training FLOPs (the suite's count; ppo's start after SFT and reward model)")
    ax.set_ylabel("forget rate on forget_val (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("compute to target (mean over seeds; band: min–max" + ("; ×: an evaluation outside the limits)" if marked else ")"),
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")
