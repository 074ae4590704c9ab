"""The tables a run, a seeds group and a leaderboard print: before/after and the paper's Table 3.

Every table is made from record dicts (a run's metrics with its config), never from live objects.
"""

from __future__ import annotations

import json
import re

from unlearnbench.metrics import FORGET_RATES


def comparison_rows(record: dict) -> list[list]:
    """Rows of split, metric, original, unlearned, relative change: the before/after table."""
    metrics = record.get("metrics", {})
    before, after = metrics.get("original", {}), metrics.get("unlearned", {})
    rows = []
    for split, scores in before.items():
        for name, b in scores.items():
            a = after.get(split, {}).get(name)
            show = lambda r: "NM" if r is None or r["value"] is None else f"{r['value']:.3f}"  # noqa: E731
            change = ""
            if a and a["value"] is not None and b["value"] not in (None, 0):
                change = f"{(a['value'] - b['value']) / abs(b['value']):+.0%}"
            arrow = "↑" if b["higher_is_better"] else "↓"
            rows.append([split, f"{name} {arrow}", show(b), show(a) if a else "-", change])
    return rows


def comparison_table(record: dict, fmt: str = "github") -> str:
    from tabulate import tabulate

    return tabulate(comparison_rows(record), headers=["split", "metric", "original", "unlearned", "change"],
                    tablefmt=fmt, disable_numparse=True)


def paper_columns(metrics: dict) -> list[tuple[str, str, str, float]]:
    """The paper's Table 3 columns present in a record: (header, split, metric, scale)."""
    original = metrics.get("original", {})
    rate = next((m for m in FORGET_RATES if m in original.get("unlearned", {})), None)
    if rate is None:
        return []
    # The clean share sits next to the forget rate: a model that stops misbehaving by breaking
    # lowers the forget rate but not the degenerate rate, and gains nothing in the clean share.
    columns = [(f"{FORGET_RATES[rate]} unlearned ↓", "unlearned", rate, 100), (f"{FORGET_RATES[rate]} unseen ↓", "unseen", rate, 100),
               ("degenerate % unlearned ↓", "unlearned", "degenerate_rate", 100),
               ("clean % unlearned ↑", "unlearned", "clean_rate", 100), ("clean % unseen ↑", "unseen", "clean_rate", 100),
               ("distinct answers % unlearned ↑", "unlearned", "distinct_answers", 100),
               ("diversity ↑", "unlearned", "diversity", 1), ("fluency ↓", "unlearned", "fluency", 1),
               ("utility ↑ (normal)", "normal", "utility", 1), ("similarity ↑ (normal)", "normal", "similarity_to_original", 1)]
    if "leak_bleu" in original.get("unlearned", {}):
        columns.insert(2, ("leak BLEU unlearned ↓", "unlearned", "leak_bleu", 1))
    return [c for c in columns if c[2] in original.get(c[1], {})]


def metric_cell(records: list[dict], phase: str, split: str, name: str, scale: float) -> str:
    """One table cell: the value, or across seeds the mean ± 95% CI (bench/stats.py); NM where unmeasurable."""
    from unlearnbench.stats import summarize

    found = [r["metrics"][phase][split][name]["value"] for r in records
             if name in r.get("metrics", {}).get(phase, {}).get(split, {})]
    if not found:
        return "-"
    summary = summarize(found)
    cell = summary.format(scale, 1 if scale == 100 else 3)
    # Some seeds NM (degenerate output): say over how many the rest is taken.
    return cell if summary.mean is None or summary.n == len(found) else f"{cell} (n={summary.n} of {len(found)})"


def paper_table(records: dict | list[dict], fmt: str = "github") -> str:
    """The paper's Table 3 layout: one row per model (original, unlearned), the task's rate on
    unlearned and unseen prompts, diversity and fluency on unlearned prompts, utility and
    similarity to the original on normal prompts. Several records (seeds) give mean ± 95% CI."""
    from tabulate import tabulate

    records = [records] if isinstance(records, dict) else records
    columns = paper_columns(records[0].get("metrics", {}))
    if not columns:
        return ""
    first = records[0]
    rows = []
    for phase, label in (("original", f"original ({first.get('original', {}).get('kind', '?')})"),
                         ("unlearned", first.get("config", {}).get("method", "unlearned"))):
        if phase in first.get("metrics", {}):
            rows.append([label, *[metric_cell(records, phase, split, name, scale) for _, split, name, scale in columns]])
    headers = ["model", *[c[0] for c in columns]]
    if len(records) > 1:
        headers[0] = f"model (mean ± 95% CI, {len(records)} seeds)"
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


# --- leaderboard rows: runs grouped into the rows of a board and of its plots -------------------


def group_key(entry: dict) -> str:
    """Entries that differ only in seed (and so in hash, run id, compute) share a row."""
    return json.dumps([entry["model"], entry["method"], entry["preset"], entry["data"], entry["settings"], entry["judges"]],
                      sort_keys=True)


def original_key(entry: dict) -> str:
    return json.dumps([entry["model"], entry["data"], entry["settings"]["original"], entry["settings"]["template"],
                       entry["settings"]["limit"], entry["judges"], machine_kind(entry)], sort_keys=True)


def machine_kind(entry: dict) -> str:
    """The hardware an entry ran on, without its thread count. A run prepares and evaluates its
    original on its own machine, and bf16 arithmetic differs between kinds (AMX or not), so each
    kind gets its own original row. compute_to_target.machine_of, which pairs seconds rather than
    outputs, keeps the core count, since seconds depend on it."""
    return re.sub(r", \d+ threads?(?=;|$)", "", entry.get("hardware", ""))  # each attempt's, if resumed


def groups(entries: list[dict], key) -> list[list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for entry in sorted(entries, key=lambda e: (e["model"], e["method"], e["seed"], e["key"])):
        grouped.setdefault(key(entry), []).append(entry)
    return list(grouped.values())


def original_rows(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """("O1", runs), ...: the models before unlearning. Runs of several methods with one seed
    evaluated the same original on the same split, so each seed counts once."""
    rows = []
    for index, members in enumerate(groups(entries, original_key), start=1):
        one_per_seed: dict[int, dict] = {}
        for member in members:
            one_per_seed.setdefault(member["seed"], member)
        rows.append((f"O{index}", list(one_per_seed.values())))
    return rows


def measured_rows(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """("M1", runs), ...: one row per configuration, its runs differing only in seed."""
    return [(f"M{index}", members) for index, members in enumerate(groups(entries, group_key), start=1)]
