"""unlearnbench: an evaluation-first benchmark suite for LLM unlearning.

The package mirrors the pipeline:
task -> method -> generation -> metrics -> results -> leaderboard.
Nothing torch-heavy is imported here, so `unlearnbench --help` stays fast.
"""

__version__ = "0.1.0"
