"""Early stopping on validation PR-AUC within a time budget, for both trainers.

Keeps the best epoch's weights, counts epochs without improvement, and stops when the
patience runs out or the next epoch would not fit in the budget (paced by the epochs
already run, measured from ``paced_from``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class EarlyStopping:
    patience: int
    deadline: float
    #: the run's start (the ``minutes`` column of the history)
    started: float
    #: where the epochs' pace is measured from
    paced_from: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -1.0
    best_state: dict[str, Any] | None = None
    stale: int = 0

    def end_epoch(
        self,
        model: nn.Module,
        epoch: int,
        loss: float,
        pr_auc: float,
        report: Callable[[str, dict[str, float]], None],
    ) -> bool:
        """Record the epoch; True when training should stop."""
        now = time.monotonic()
        row = {
            "epoch": epoch + 1,
            "loss": loss,
            "val_pr_auc": pr_auc,
            "minutes": (now - self.started) / 60,
        }
        self.history.append(row)
        report("epoch", row)
        if pr_auc > self.best_score:
            self.best_score = pr_auc
            self.best_state = {k: v.clone() for k, v in model.state_dict().items()}
            self.stale = 0
        else:
            self.stale += 1
        epoch_s = (now - self.paced_from) / (epoch + 1)
        return self.stale >= self.patience or now + epoch_s > self.deadline

    def finish(self, model: nn.Module, offset: float) -> None:
        """The best epoch's weights, with the calibration offset baked into the head."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        with torch.no_grad():  # calibrated logits from here on
            model.get_submodule("head").get_buffer("logit_offset").fill_(offset)
        model.eval()


def report_step(
    report: Callable[[str, dict[str, float]], None],
    epoch: int,
    step: int,
    steps: int,
    total: float,
) -> None:
    """The progress event of one training step (running mean loss)."""
    report(
        "step", {"epoch": epoch + 1, "step": step + 1, "steps": steps, "loss": total / (step + 1)}
    )
