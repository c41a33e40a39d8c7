"""A toy tracker registered from outside lxsweep: it appends every call to a JSON-lines file in the store."""
from __future__ import annotations

import json
from pathlib import Path

from lxsweep.tracking import SweepTracker, TrialTracker, register_tracker


class ToyTrial(TrialTracker):
    def _write(self, event: str, **data) -> None:
        path = Path(self.store.path("toy")) / f"{self.run_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps({"event": event, "trial": self.key.name, **data}) + "\n")

    def log_epoch(self, metrics: dict) -> None:
        self._write("epoch", epoch=metrics["epoch"], accuracy=metrics["accuracy"])

    def finish_trial(self, final: dict) -> None:
        self._write("final", accuracy=final["accuracy"])

    def close(self, ok: bool) -> None:
        self._write("close", ok=ok)


class ToySweep(SweepTracker):
    def update(self, rows: list[dict], figure=None) -> None:
        Path(self.store.path("toy")).mkdir(parents=True, exist_ok=True)
        Path(self.store.path("toy/summary.json")).write_text(json.dumps(sorted(r["trial"] for r in rows)))


register_tracker("toy", ToyTrial, ToySweep)
