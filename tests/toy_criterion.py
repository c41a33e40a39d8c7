"""A pruning criterion from outside the package, as a user would add one: one function, one registration.

Named in an experiment's ``plugins`` list, this module is imported wherever the
experiment is built (the CLI, the Ray Tune driver, every Ray Train worker).
"""
from __future__ import annotations

from lxsweep import pruning
from lxsweep.subnetworks import DENSE, MaskInputs, register_criterion


def centred_magnitude(inputs: MaskInputs) -> dict:
    """Remove the surviving weights closest to their tensor's mean (exact counts, like every criterion)."""
    centred = {name: w.float() - w.float().mean() for name, w in inputs.weights.items()}
    return pruning.magnitude_mask(centred, inputs.current, inputs.sparsity, layerwise=inputs.layerwise)


# compare: the report tests toy against dense (and random, where a store has it), seed by seed.
register_criterion("toy", centred_magnitude, iterative=True, compare=(DENSE, "random"),
                   scores="|w - mean(w)| per tensor of the parent's trained weights: smallest removed")
