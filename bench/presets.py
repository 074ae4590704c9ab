"""Named hyper-parameter sets. `default` is tuned for the embedded 135M model on CPU;
`paper` holds the paper's settings for paper-scale models (OPT-1.3B and up, paper.md §1.3)."""

PRESETS = {
    "default": {},
    "paper": {
        "hyper": {"lr": 2e-6, "batch_size": 2, "steps": 1000, "weight_decay": 0.01, "max_grad_norm": 0.0},
        "template": "paper",
    },
}
