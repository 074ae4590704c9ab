"""PKU-SafeRLHF v0 (Alpaca-7B responses): the harmful task's forget data, from the hub at a pinned revision.

The paper's code loads `PKU-Alignment/PKU-SafeRLHF`, split `330k_train` (docs/paper.md §1.2). That split
was declared in the dataset card as `round0/330k/train.jsonl.xz` (card YAML added in hub commit
84c472b, "Update README.md"). Commit ff7ba91063016c78a225b0f74e1c0860bb18230f ("Move the 30k split of
Beavertails to `PKU-Alignment/PKU-SafeRLHF-30K`") dropped that YAML and renamed
`round0/330k/{train,test}.jsonl.xz` to `round0/{train,test}.jsonl.xz` with "File without changes"
(hub commit page), so at that revision `round0/train.jsonl.xz` (46.9 MB) holds the bytes of the
paper's `330k_train`. The v1.0 release (2024-06-13, Alpaca-7B/Alpaca2-7B/Alpaca3-8B, `data/*`)
replaced the default config later; pinning ff7ba91 keeps it out. Because the card at ff7ba91 has
no `configs:` block, the files are named explicitly through `data_files`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unlearnbench.errors import BenchError, first_line
from unlearnbench.tasks import hub


@dataclass(frozen=True)
class HubFiles:
    """Named files of a hub dataset repository at one revision, one file per split.

    Not `hub.HubDataset`: that names a builder config and split, and these repositories are read
    file by file (the revisions we need have no usable config).
    """

    repo: str
    revision: str
    data_files: dict[str, str]  # split -> path inside the repository

    def describe(self, split: str) -> str:
        revision = self.revision[:8] if re.fullmatch(r"[0-9a-f]{40}", self.revision) else self.revision
        return f"{self.repo}@{revision}:{self.data_files.get(split, split)}"


def load_split(files: HubFiles, split: str, columns: tuple[str, ...]):
    """One split through `datasets.load_dataset`, with every failure as a one-line BenchError."""
    if split not in files.data_files:
        raise BenchError(f"{files.repo} has no split '{split}'; choose from {', '.join(files.data_files)}")
    try:
        # Looked up on the module at call time so that tests can swap in a local loader.
        rows = hub.load_dataset(files.repo, revision=files.revision, data_files={split: files.data_files[split]},
                                split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        message = first_line(exc)
        raise BenchError(f"could not load {files.describe(split)} from the hub: {message}") from exc
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise BenchError(f"{files.describe(split)} lacks column(s) {', '.join(missing)}; "
                         f"has {', '.join(rows.column_names)}")
    return rows


PKU_SAFERLHF_V0 = HubFiles(
    "PKU-Alignment/PKU-SafeRLHF",
    "ff7ba91063016c78a225b0f74e1c0860bb18230f",
    {"train": "round0/train.jsonl.xz", "test": "round0/test.jsonl.xz"},
)

# The v0 schema also has better_response_id and safer_response_id; nothing here needs them.
PKU_COLUMNS = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe")


def load_pku_rows(split: str = "train") -> list[dict]:
    """One row per unsafe response: {"prompt", "unsafe_response", "safe_response"}.

    As in the official code (utils.py, create_pku_dataloader_from_dataset), every response with
    is_response_X_safe == False is one forget sample, in file order, response_0 before response_1.
    `safe_response` is the pair's other response when that one is labelled safe, else None (both
    unsafe): it is there for baselines that need a safe target for the same prompt, and None says
    the dataset has none rather than inventing one.
    """
    rows = load_split(PKU_SAFERLHF_V0, split, PKU_COLUMNS)
    out: list[dict] = []
    for number, row in enumerate(rows.select_columns(list(PKU_COLUMNS))):
        responses = (row["response_0"], row["response_1"])
        safe = (row["is_response_0_safe"], row["is_response_1_safe"])
        for k in (0, 1):
            # bool() would read a missing label (None) as "unsafe" and forget a response nobody judged.
            if not isinstance(safe[k], bool):
                raise BenchError(f"{PKU_SAFERLHF_V0.describe(split)} row {number}: is_response_{k}_safe is "
                                 f"{safe[k]!r}, expected true or false")
        for k in (0, 1):
            if not safe[k]:
                other = 1 - k
                out.append({"prompt": row["prompt"], "unsafe_response": responses[k],
                            "safe_response": responses[other] if safe[other] else None})
    return out
