"""Hub datasets at pinned revisions, loaded through `datasets`.

The revisions are pinned so that a result names exactly the data it was computed on.
Nothing here runs without network access unless the datasets cache already holds the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnbench.errors import BenchError, first_line


@dataclass(frozen=True)
class HubDataset:
    repo: str
    config: str | None
    revision: str
    split: str

    def describe(self) -> str:
        return f"{self.repo}/{self.config}@{self.revision[:8]}:{self.split}"


HALUEVAL_QA = HubDataset("pminervini/HaluEval", "qa", "b1171838c842be2327fbd9766e904c63a4224dd7", "data")
TRUTHFULQA_GENERATION = HubDataset("truthfulqa/truthful_qa", "generation", "741b8276f2d1982aa3d5b832d3ee81ed3b896490", "validation")


def load_dataset(*args, **kwargs):
    import datasets

    return datasets.load_dataset(*args, **kwargs)


def load_rows(dataset: HubDataset, columns: tuple[str, ...]) -> list[dict]:
    try:
        rows = load_dataset(dataset.repo, dataset.config, revision=dataset.revision, split=dataset.split)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        message = first_line(exc)
        raise BenchError(f"could not load {dataset.describe()} from the hub: {message}") from exc
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise BenchError(f"{dataset.describe()} lacks column(s) {', '.join(missing)}; has {', '.join(rows.column_names)}")
    return [{c: row[c] for c in columns} for row in rows]
