"""The selection rule, one for choosing among tuning trials (`tune`) and among the steps of one
run (`run --eval-every K --select best`). It reads validation rows of eval_log.jsonl only:

    forget       = the forget rate on forget_val
    utility drop = 1 − utility(normal_val) / utility(normal_val before training)
    degenerate   = the degenerate rate on forget_val
    selected     = argmin forget  subject to  utility drop ≤ max_utility_drop  and  degenerate ≤ max_degenerate
                   (ties: the higher utility, then the earlier trial or step)
"""

from __future__ import annotations

from unlearnbench.metrics import FORGET_RATES


def outcome(first: dict, row: dict) -> dict:
    """The rule's inputs from an eval_log row, against the row before training (`first`)."""
    rate = next(f"forget_val/{m}" for m in FORGET_RATES if f"forget_val/{m}" in row)
    before, after = first["normal_val/utility"], row["normal_val/utility"]
    drop = 1 - after / before if before > 0 else float(after < before)
    return {"forget": row[rate], "forget_before": first[rate], "utility": after, "utility_before": before,
            "utility_drop": drop, "degenerate": row["forget_val/degenerate_rate"],
            "train_flops": row["train_flops"], "train_seconds": row["train_seconds"]}


def feasible(result: dict, limits) -> bool:
    """Within both limits (`limits` has max_utility_drop and max_degenerate)."""
    return result["utility_drop"] <= limits.max_utility_drop and result["degenerate"] <= limits.max_degenerate


def best(results: list[dict], limits, order: str) -> dict | None:
    """The selected result among `results` (each with the key `order`, e.g. "trial" or "step"), or None."""
    candidates = [r for r in results if feasible(r, limits)]
    return min(candidates, key=lambda r: (r["forget"], -r["utility"], r[order])) if candidates else None


def pareto_front(results: list[dict], limits) -> list[dict]:
    """The trade-off between forgetting and utility among results that are not broken (degenerate
    within its limit: a broken model's utility says little): those no other such result matches
    or beats on both forget rate and utility, in order of forget rate."""
    intact = [r for r in results if r["degenerate"] <= limits.max_degenerate]
    dominated = lambda r: any(o["forget"] <= r["forget"] and o["utility"] >= r["utility"]  # noqa: E731
                              and (o["forget"], o["utility"]) != (r["forget"], r["utility"]) for o in intact)
    return sorted((r for r in intact if not dominated(r)), key=lambda r: r["forget"])


def rule(limits) -> str:
    return (f"lowest forget rate on forget_val such that utility on normal_val falls by at most "
            f"{limits.max_utility_drop:.0%} (relative) and the degenerate rate on forget_val is at most "
            f"{limits.max_degenerate:.0%}; validation split only")
