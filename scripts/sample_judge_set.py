"""Draw the items of the judge-validation set from the committed leaderboard runs.

    .venv/bin/python scripts/sample_judge_set.py OUT_DIR

Every item is a real output of a committed run (original, unlearned, PPO, SFT) with its
provenance (run id, the commit that produced it, method, seed, phase, split) and the references
a reader needs to label it. Prompts are assigned by a hash of their text to one of two parts,
so no prompt is on both sides:
- `validation` (about 60% of prompts): what every judge is measured on; nothing trains on it;
- `development`: what the harm judge may train on and the degeneracy thresholds are set on.
Within each part the items are stratified by (task, split kind, producer, looks-degenerate), so
rare kinds (broken outputs, refusals, PPO) are well represented. The labels are added by reading
each item against docs/labelling-guide.md; this script only draws the items (seeded).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import zlib
from collections import defaultdict
from pathlib import Path

from unlearnbench import registry
from unlearnbench.metrics.degenerate_rate import degenerate

RUNS = Path(__file__).resolve().parents[1] / "leaderboards" / "runs"
# (task, split kind) -> items wanted in (validation, development)
QUOTAS = {
    ("harmful", "forget"): (230, 220),
    ("harmful", "normal"): (60, 20),
    ("hallucination", "forget"): (140, 50),
    ("hallucination", "normal"): (60, 20),
    ("copyright", "forget"): (140, 50),
    ("copyright", "normal"): (60, 20),
}


def part_of(question: str) -> str:
    return "validation" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10 < 6 else "development"


def looks_degenerate(text: str) -> bool:
    """A rough filter for stratifying only; the labels decide what is degenerate."""
    words = text.split()
    if len(text.strip()) < 3 or not words:
        return True
    if len(set(words)) / len(words) < 0.4 or max(len(w) for w in words) > 25:
        return True
    return len(zlib.compress(text.encode())) / len(text.encode()) < 0.35


def all_items() -> list[dict]:
    refs_cache, items, seen = {}, [], set()
    for run_dir in sorted(RUNS.glob("*/*")):
        config = json.loads((run_dir / "config.json").read_text())
        task, seed, method = config["config"]["task"], config["config"]["seed"], config["config"]["method"]
        if (task, seed) not in refs_cache:
            data = registry.get("task", task)().load("embedded", seed, eval_limit=200)
            refs_cache[task, seed] = {s: e.refs for s, e in data.eval_sets.items()}
        for line in (run_dir / "generations.jsonl").read_text().splitlines():
            row = json.loads(line)
            key = (task, row["question"], row["output"])
            if key in seen:  # originals repeat across the methods of one seed
                continue
            seen.add(key)
            ref = refs_cache[task, seed][row["split"]][row["index"]]
            assert ref["question"] == row["question"]
            producer = "original" if row["phase"] == "original" else method
            items.append({
                "task": task, "split": row["split"], "question": row["question"], "output": row["output"],
                "references": {k: v for k, v in ref.items() if k != "question"},
                "provenance": {"run_id": config["run_id"], "commit": config["environment"]["git_commit"],
                               "method": method, "seed": seed, "phase": row["phase"], "producer": producer},
            })
    return items


def draw(items: list[dict], seed: int = 0, quotas=QUOTAS) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    strata = defaultdict(list)
    for item in items:
        kind = "normal" if item["split"] == "normal" else "forget"
        strata[part_of(item["question"]), item["task"], kind, item["provenance"]["producer"],
               looks_degenerate(item["output"])].append(item)
    parts = {"validation": [], "development": []}
    for (task, kind), wanted in quotas.items():
        for part, quota in zip(("validation", "development"), wanted):
            groups = [sorted(v, key=lambda i: (i["question"], i["output"]))
                      for k, v in sorted(strata.items(), key=lambda kv: str(kv[0])) if k[:3] == (part, task, kind)]
            for group in groups:
                rng.shuffle(group)
            chosen = []
            while len(chosen) < quota and any(groups):  # round-robin: every stratum as evenly as it allows
                for group in groups:
                    if group and len(chosen) < quota:
                        chosen.append(group.pop())
            parts[part] += chosen
    for part, chosen in parts.items():
        rng.shuffle(chosen)
        for n, item in enumerate(chosen):
            item["id"] = f"{part[0]}{n:04d}"
    return parts


# A second draw, after the first showed the harm judge short of training data: more harmful
# outputs from development prompts only, none of them already drawn, and none that the
# degeneracy measure flags (the harm judge scores those 0 without its classifier).
EXTRA_HARM = {("harmful", "forget"): (0, 640)}


def write(path: Path, chosen: list[dict], prefix: str = "") -> None:
    with open(path, "w") as f:
        for item in chosen:
            f.write(json.dumps({"id": prefix + item.pop("id"), **item}) + "\n")
    print(path, len(chosen))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    items = all_items()
    first = draw(items)
    drawn = {(i["task"], i["question"], i["output"]) for part in first.values() for i in part}
    for part, chosen in first.items():
        write(out / f"{part}.jsonl", chosen)
    rest = [i for i in items if (i["task"], i["question"], i["output"]) not in drawn and not degenerate(i["output"])]
    write(out / "development-harm.jsonl", draw(rest, seed=1, quotas=EXTRA_HARM)["development"], prefix="h")
