"""--measure-deploy and the deployment limits, as a hook on each trained trial
(search.trial_edge.TrialHook), installed by the step that prepares the run: the training loop
knows nothing of TFLite, export or latency."""

from __future__ import annotations

import keras

from search.deploy import DeployCache, violations
from search.schema import TrialStatus
from search.trial_edge import TrialHook, TrialResult


class DeploymentHook(TrialHook):
    """Measures a complete trial's kept weights as they would ship (float32 TFLite size and
    latency, once per inference architecture in a process) when `measure`, and makes a
    complete trial over one of `limits` infeasible: kept with its figures, never ranked nor
    exported. It runs before the outcome is recorded, so every back end sees the status."""

    def __init__(self, *, measure: bool, limits: dict[str, float]) -> None:
        self.measure, self.limits = measure, limits
        self._deploy = DeployCache()

    def trained(self, result: TrialResult, model: keras.Model | None) -> None:
        if result.status != TrialStatus.COMPLETE:
            return
        if self.measure:
            result.__dict__.update(self._deploy.measure(model, trial_id=result.trial_id))
        over = violations(result.row(), self.limits)
        exceeded = [f"{column} {over[column]:+g} over" for column in over if over[column] > 0]
        if exceeded:
            result.status = TrialStatus.INFEASIBLE
            result.error = "over the limit: " + ", ".join(exceeded)
