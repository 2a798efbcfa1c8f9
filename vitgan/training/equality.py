"""Whether a compiled Trainer trains as the eager one does, on any device: one training step of each from the same
state (weights, buffers, optimisers, random streams), its loss terms, gradients, weight updates and buffers compared.

Nothing is bitwise equal: a compiled graph's fused kernels sum in another order, and under bf16 they keep fp32 inside
a kernel where eager rounds each op's output. Adam makes every element's step about lr whatever its gradient's size,
so where a gradient is 0 in exact arithmetic rounding noise moves the weight by +-lr in either run: the weights are
compared by how far they moved. `TOLERANCES` are per precision, with what they were measured against.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from vitgan.training.loss import TERMS
from vitgan.training.trainer import Trainer

# The scalars compared (each step's loss terms, D's mean logits, the gradient norms: relative, and absolute where
# they are near 0), then the relative difference ||compiled - eager|| / ||eager|| of the gradients of the step's last
# D phase and of its G phase, of how far the weights moved and of the buffers (ISN's power-iteration vectors, G's
# w_avg). In the comments: the worst that tests/test_compile.py measured on a 2-core AMX CPU, and (fp32) what a
# compiled G and D whose outputs are 0.1% off give. fp16 takes bf16's (not measured: no CPU runs fp16 autocast).
SCALARS = (*TERMS, "logits_real", "logits_fake", "grad_d", "grad_g")
TOLERANCES = {
    # terms 1.8e-5 (logits_real), gradients 5.3e-6 (0.1% off: 4.8e-4), weights 6.0e-3, buffers 1.0e-7
    "fp32": dict(rel=1e-3, abs=1e-5, grads=1e-4, weights=0.05, buffers=1e-4),
    # terms 2.6e-2 (grad_d's norm; losses 5e-3 absolute), gradients 5.8e-2, weights 0.17, buffers 1.4e-4: bf16's
    # own rounding, under which a compiled G and D 5% off still pass (the fp32 case is the one that tells)
    "bf16": dict(rel=0.1, abs=2e-2, grads=0.15, weights=0.5, buffers=1e-2),
}
TOLERANCES["fp16"] = TOLERANCES["bf16"]


def network_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """G's and D's weights and buffers (ISN's power-iteration vectors, G's w_avg), copied."""
    return {f"{net}.{name}": t.detach().clone() for net in ("G", "D")
            for name, t in getattr(trainer, net).state_dict().items()}


def gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The gradients left by the step's last D phase and its G phase, copied."""
    return {f"{net}.{name}": p.grad.detach().clone() for net in ("G", "D")
            for name, p in getattr(trainer, net).named_parameters() if p.grad is not None}


def relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all the tensors together (the same keys in both), in fp32."""
    if a.keys() != b.keys():
        raise ValueError(f"the two runs have different tensors: {sorted(a.keys() ^ b.keys())[:4]}")
    norm = lambda ts: torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in ts]))
    return float(norm([a[k] - b[k] for k in b]) / norm(b.values()).clamp_min(1e-30))


def step_difference(eager: Trainer, compiled: Trainer, precision: str) -> dict[str, Any]:
    """One step of `compiled` from `eager`'s state against one step of `eager`: the worst relative difference of the
    scalars (|c - e| / max(|e|, abs / rel)), and those of the gradients, the weight updates and the buffers, each
    with its tolerance of `precision` and whether all are within them (`ok`). `compiled` is left in the state its
    step reached; `eager` too."""
    tol = TOLERANCES[precision]
    compiled.load_state(copy.deepcopy(eager.state()))
    origin = network_state(eager)
    params = {f"{net}.{name}" for net in ("G", "D") for name, _ in getattr(eager, net).named_parameters()}
    stats_e, grads_e, state_e = eager.step(), gradients(eager), network_state(eager)
    stats_c, grads_c, state_c = compiled.step(), gradients(compiled), network_state(compiled)
    floor = tol["abs"] / tol["rel"]
    scalars = {name: abs(stats_c[name] - stats_e[name]) / max(abs(stats_e[name]), floor) for name in SCALARS}
    worst = max(scalars, key=scalars.get)
    measured = {
        "scalars": scalars[worst],
        "grads": relative(grads_c, grads_e),
        "weights": relative({k: state_c[k] - origin[k] for k in params}, {k: state_e[k] - origin[k] for k in params}),
        "buffers": relative({k: state_c[k] for k in state_c.keys() - params},
                            {k: state_e[k] for k in state_e.keys() - params}),
    }
    limits = {"scalars": tol["rel"], **{k: tol[k] for k in ("grads", "weights", "buffers")}}
    return {"precision": precision, "worst_scalar": worst, **{k: round(v, 8) for k, v in measured.items()},
            "tolerances": limits, "ok": all(measured[k] <= limits[k] for k in measured)}
