"""The leaderboard's plots (matplotlib, written as PNG next to the markdown):

    training_curves.png    every loss term and training statistic against step, one panel per term,
                           one line per row in the row's own colour
                           (the mean over seeds, shaded between the lowest and highest seed)
    before_after.png       each Table-3 metric for the original and after each method (mean, 95% CI bars)
    forget_vs_compute.png  the forget metric on unlearned prompts against training FLOPs, one point per row
    robustness.png         (attacked runs only) per row, the forget rate of the original, of the unlearned
                           model as asked, at its worst rephrasing or quantization, and after relearning

The PNGs carry no timestamp or version, so that publishing the same records twice gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from unlearnbench.records import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _row_label(label: str, members: list[dict]) -> str:
    """The leaderboard row id first, so that a plot and the table name a row alike."""
    first = members[0]
    preset = "" if first.get("preset", "default") == "default" else f" {first['preset']}"
    return f"{label} {first['method']}{preset} ({first['model']}, {len(members)} seed{'s' if len(members) > 1 else ''})"


def write_leaderboard_plots(task: str, entries: list[dict], folder: Path) -> None:
    from unlearnbench.errors import BenchError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create '{folder}': {exc.strerror or exc}") from exc
    training_curves(task, entries, folder / "training_curves.png")
    before_after(task, entries, folder / "before_after.png")
    forget_vs_compute(task, entries, folder / "forget_vs_compute.png")
    if any("robustness" in e for e in entries):
        robustness(task, entries, folder / "robustness.png")


def is_plotted_term(key: str) -> bool:
    """Loss terms and training statistics, not the bookkeeping of the log (step, timings, the
    learning-rate schedule and a fixed KL coefficient)."""
    return key != "step" and not key.endswith(("seconds", "lr")) and key != "kl_coef"


def training_curves(task: str, entries: list[dict], path: Path) -> None:
    import numpy as np

    from unlearnbench.tables import measured_rows

    plt = _pyplot()
    rows = measured_rows(entries)
    names = [_row_label(label, members) for label, members in rows]
    terms = sorted({k for e in entries for point in e["train_curve"] for k in point if is_plotted_term(k)},
                   key=lambda t: (t != "total", t))
    # One colour per row in every panel (a panel may hold only some rows: ppo's reward, npo's ratio).
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if not terms:
        terms = ["total"]
    columns = min(3, len(terms))
    fig, axes = plt.subplots((len(terms) + columns - 1) // columns, columns, figsize=(4.2 * columns, 3.2 * ((len(terms) + columns - 1) // columns)),
                             squeeze=False)
    for ax, term in zip(axes.flat, terms):
        for index, (_, members) in enumerate(rows):
            curves = [[(p["step"], p[term]) for p in m["train_curve"] if term in p] for m in members]
            curves = [c for c in curves if c]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            steps = np.array([s for s, _ in curves[0][:length]])
            values = np.array([[v for _, v in c[:length]] for c in curves])
            line, = ax.plot(steps, values.mean(0), label=names[index], linewidth=1.4,
                            color=colours[index % len(colours)])
            if len(curves) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.flat:  # every row that appears in some panel, in row order
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ordered = [name for name in names if name in handles]
    if ordered:
        fig.legend([handles[k] for k in ordered], ordered, loc="lower center", ncol=min(3, len(ordered)),
                   bbox_to_anchor=(0.5, -0.02 - 0.04 * (len(ordered) // 3)))
    fig.suptitle(f"{task}: loss terms and training statistics against step (mean over seeds; band: min–max)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    _save(fig, path)


def before_after(task: str, entries: list[dict], path: Path) -> None:
    from unlearnbench.tables import measured_rows, original_rows
    from unlearnbench.tables import paper_columns
    from unlearnbench.stats import summarize

    plt = _pyplot()
    columns = paper_columns(entries[0]["metrics"])
    bars = ([(f"{label} original", "original", m) for label, m in original_rows(entries)]
            + [(_row_label(label, m), "unlearned", m) for label, m in measured_rows(entries)])
    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns) + 1, 3.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (header, split, name, scale) in zip(axes.flat, columns):
        for index, (label, phase, members) in enumerate(bars):
            summary = summarize([m["metrics"][phase][split][name]["value"] for m in members
                                 if name in m["metrics"].get(phase, {}).get(split, {})])
            if summary.mean is None:
                continue
            ax.bar(index, summary.mean * scale, yerr=None if summary.half_width is None else summary.half_width * scale,
                   color=colours[index % len(colours)], capsize=3, label=label)
        ax.set_title(header, fontsize=9)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"{task}: before and after unlearning (mean, 95% CI over seeds)")
    fig.tight_layout()
    _save(fig, path)


def forget_vs_compute(task: str, entries: list[dict], path: Path) -> None:
    from unlearnbench.tables import measured_rows, original_rows
    from unlearnbench.tables import paper_columns
    from unlearnbench.stats import summarize

    plt = _pyplot()
    header, split, name, scale = paper_columns(entries[0]["metrics"])[0]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, members in original_rows(entries):
        before = summarize([m["metrics"]["original"][split][name]["value"] for m in members])
        if before.mean is not None:
            ax.axhline(before.mean * scale, color="grey", linestyle="--", linewidth=1, label=f"{label} original")
    spans = []
    for label, members in measured_rows(entries):
        rate = summarize([m["metrics"]["unlearned"][split][name]["value"] for m in members])
        flops = summarize([m["compute"]["train_flops"] for m in members])
        if rate.mean is None or not flops.mean:
            continue
        spans.append(flops.mean)
        ax.errorbar(flops.mean, rate.mean * scale, yerr=None if rate.half_width is None else rate.half_width * scale,
                    fmt="o", capsize=3, label=_row_label(label, members))
    if spans and max(spans) > 10 * min(spans):  # a log axis only where compute spans orders of magnitude
        ax.set_xscale("log")
    elif spans:  # from zero, so that near-equal compute does not look spread out
        ax.set_xlim(0, max(spans) * 1.15)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax.set_xlabel("training compute (FLOPs, estimated from parameters × tokens)")
    ax.set_ylabel(header)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{task}: forget metric against compute")
    fig.tight_layout()
    _save(fig, path)


ROBUSTNESS_BARS = (("original", "original_rate"), ("unlearned, as asked", "unlearned_rate"),
                   ("worst rephrasing / quantization", "worst_case_forget_rate"),
                   ("after relearning (forget)", "relearn_forget_rate"), ("after relearning (normal control)", "relearn_normal_rate"))


def robustness(task: str, entries: list[dict], path: Path) -> None:
    from unlearnbench.stats import summarize
    from unlearnbench.tables import measured_rows

    plt = _pyplot()
    rows = [(label, [m["robustness"] for m in members if "robustness" in m], members)
            for label, members in measured_rows(entries)]
    rows = [row for row in rows if row[1]]
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 3, 3.8))
    width = 0.8 / len(ROBUSTNESS_BARS)
    for offset, (name, key) in enumerate(ROBUSTNESS_BARS):
        for index, (label, attacked, members) in enumerate(rows):
            summary = summarize([r.get(key) for r in attacked])
            if summary.mean is None:
                continue
            ax.bar(index + (offset - len(ROBUSTNESS_BARS) / 2 + 0.5) * width, summary.mean * 100, width,
                   yerr=None if summary.half_width is None else summary.half_width * 100, capsize=2,
                   color=f"C{offset}", label=name if index == 0 else None)
    ax.set_xticks(range(len(rows)), [_row_label(label, members).replace(" (", "\n(") for label, _, members in rows],
                  fontsize=8)
    ax.set_ylabel("forget rate on unlearned prompts (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(f"{task}: does the forgetting survive an attack? (mean, 95% CI over seeds)")
    fig.tight_layout()
    _save(fig, path)


def ppo_training(train_log: list[dict], path: Path, window: int = 10, greedy: dict | None = None) -> None:
    """The PPO stage of a `ppo` run: the reward model's score of each rollout batch and the KL to
    the SFT model, per PPO step (thin: each step; thick: the mean of the last `window` steps), and
    the greedy reward on held-out prompts where the run recorded it (`train.greedy_reward`)."""
    import numpy as np

    rows = [r for r in train_log if "reward" in r and "kl" in r]
    if not rows:
        return
    plt = _pyplot()
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for ax, key, title in ((axes[0], "reward", "reward (reward model score of the rollouts)"),
                           (axes[1], "kl", "KL to the SFT model (summed over the response)")):
        values = np.array([r[key] for r in rows], dtype=float)
        ax.plot(steps, values, linewidth=0.8, alpha=0.4)
        if len(values) >= window:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, linewidth=2, label=f"mean of the last {window} steps")
        points = (greedy or {}).get("after_ppo_steps") or []
        if key == "reward" and points:
            first_step = steps[0] - 1  # the log's step of "0 PPO steps done"
            ax.plot([first_step + done for done, _ in points], [value for _, value in points], "o-", color="black",
                    linewidth=1.2, markersize=4, label=f"greedy, {greedy.get('prompts', '?')} held-out prompts")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def tune_plot(results: list[dict], chosen: dict | None, config, path: Path) -> None:
    """Every trial as forget rate against utility on the validation split, the Pareto front of
    the trials that are not broken drawn (selection.pareto_front), the selected trial starred."""
    from unlearnbench.selection import pareto_front

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for ok, colour, label in ((True, "tab:blue", "within the limits"), (False, "tab:gray", "outside the limits")):
        shown = [r for r in results if (r["utility_drop"] <= config.max_utility_drop
                                        and r["degenerate"] <= config.max_degenerate) is ok]
        ax.scatter([r["forget"] for r in shown], [r["utility"] for r in shown], c=colour, label=label, zorder=3)
    front = pareto_front(results, config)
    ax.plot([r["forget"] for r in front], [r["utility"] for r in front], c="tab:orange", marker="o", mfc="none",
            ms=11, label=f"Pareto front (degenerate ≤ {config.max_degenerate:.0%})", zorder=2)
    if chosen is not None:
        ax.scatter([chosen["forget"]], [chosen["utility"]], marker="*", s=250, c="tab:red", label="selected", zorder=4)
    if results:
        before = results[0]["utility_before"]
        ax.axhline(before * (1 - config.max_utility_drop), ls="--", c="gray", lw=0.8, label="utility limit")
    ax.set_xlabel("forget rate on forget_val (lower is better)")
    ax.set_ylabel("utility on normal_val (higher is better)")
    ax.set_title(f"tune: {config.run.method} on {config.run.task}, {len(results)} trials")
    ax.legend(fontsize=8)
    _save(fig, path)
