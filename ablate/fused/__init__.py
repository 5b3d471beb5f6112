"""Fused multi-run training: K runs of one architecture trained as one wide model.

Public API (see docs/fused.md)::

    from ablate.fused import fusable_key, group_plans, train_group, evaluate_group

    groups = group_plans(plans, max_k=16)          # lists of indices into plans
    for idx in groups:
        results = train_group([plans[i] for i in idx], [out_dirs[i] for i in idx])
    evaluate_group([out_dirs[i] for i in idx], protocol, device)

Modules: :mod:`~ablate.fused.grouping` (which runs fuse), :mod:`~ablate.fused.modules`
(the fused network and optimizer), :mod:`~ablate.fused.step` (one fused training step),
:mod:`~ablate.fused.trainer` (the lockstep loop),
:mod:`~ablate.fused.evaluate` (scoring a group's run directories together),
:mod:`~ablate.fused.capacity` (how many members fit a device, measured).
"""

from ablate.fused.capacity import member_memory, max_group_size
from ablate.fused.evaluate import evaluate_group
from ablate.fused.grouping import fuse_blocker, fusable_key, group_plans
from ablate.fused.step import FusedOptions
from ablate.fused.trainer import train_group

__all__ = ["FusedOptions", "evaluate_group", "fuse_blocker", "fusable_key", "group_plans",
           "max_group_size", "member_memory", "train_group"]
