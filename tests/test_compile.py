"""The compiled path every long CPU run takes (`vitgan train` compiles G, D and R1 from AUTO_COMPILE_KIMG kimg): a
compiled training against an eager one from the same seed, in fp32 and in bf16; and R1's self-check, which runs the
eager R1 where the compiled one (torch.func.grad inside torch.compile, pytorch#136662) differs."""

import copy
import functools

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import vitgan
from vitgan.data import ImageData, load_mnist5k
from vitgan.training.equality import TOLERANCES
from vitgan.training.equality import gradients as _grads
from vitgan.training.equality import network_state as _state
from vitgan.training.equality import relative as _relative
from vitgan.training.loss import R1_RTOL, TERMS, CheckedR1, check_compiled_r1, r1_penalty
from vitgan.training.trainer import Trainer

STEPS = 4  # R1 every 2 D steps: R1 in steps 1 and 3
RES = 16


def _cfg(**overrides) -> vitgan.config.Config:
    """The mnist preset's networks and objective (INR head, minibatch std, MLP head, ISN, L2 attention, R1, DiffAugment)
    at their smallest: 16x16 images, one block per network, width 32."""
    return vitgan.presets.get("mnist", resolution=RES, g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16,
                              w_dim=16, mapping_layers=1, g_fourier_dim=8, g_inr_hidden=8, d_dim=32, d_depth=1,
                              d_heads=2, d_mlp_dim=64, batch=4, r1_gamma=1.0, r1_interval=2, **overrides)


def _trainer(compile: bool, amp: torch.dtype | None = None, **overrides) -> Trainer:
    images = torch.randint(0, 256, (8, 1, RES, RES), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)  # the networks' initialisation
    return Trainer(_cfg(**overrides), ImageData(images, torch.full((8,), -1), "tiny"), torch.device("cpu"), amp,
                   compile=compile, seed=0)


def _inductor_graphs() -> int:
    """The graphs inductor has turned into code (compiled now or found in its cache)."""
    return counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_training_matches_eager_training(precision):
    """A compiled Trainer (G, D and R1 through torch.compile, as `vitgan train` runs from AUTO_COMPILE_KIMG kimg) and
    an eager one from the same seed take STEPS steps, two of them with R1, in fp32 and under bf16 autocast
    (`--precision bf16`). The compiled one must have compiled (dynamo captured G's, D's and R1's frames and inductor
    made code of them) and R1's self-check must have kept the compiled R1.

    Nothing is bitwise equal: the compiled form's fused kernels sum in another order, and under bf16 they keep fp32
    inside a kernel where eager rounds each op's output to bf16 (8 bits, 4e-3 relative). Adam then makes every
    element's step about lr whatever its gradient's size, so where a gradient is 0 in exact arithmetic (the L2
    attention's shared q/k bias cancels) rounding noise moves the weight by +-lr in either run: the weights are
    compared by how far they moved. fp32: the two runs go their own ways from the same start, within TOLERANCES.
    bf16: the two runs' differences are bf16's precision (measured from the same state: the gradients 1-6% apart,
    eager bf16 itself 3-11% from fp32) and Adam makes them grow step by step, so each compiled step starts from the
    eager run's state (weights, buffers, optimisers, random streams) and that step's terms, gradients, weight
    movement and buffers are compared; that autocast reaches into the compiled graphs is checked by the dtype of D's
    logits."""
    amp, tol = {"fp32": None, "bf16": torch.bfloat16}[precision], TOLERANCES[precision]
    resync = precision == "bf16"
    eager = _trainer(False, amp)
    frames, graphs = counters["stats"]["unique_graphs"], _inductor_graphs()
    compiled = _trainer(True, amp)
    assert compiled.compiled and isinstance(compiled.R1_run, CheckedR1)
    assert all(isinstance(net, torch._dynamo.eval_frame.OptimizedModule) for net in (compiled.G_run, compiled.D_run))
    params = {f"{net}.{name}" for net in ("G", "D") for name, _ in getattr(eager, net).named_parameters()}
    origin = _state(eager)
    assert all(torch.equal(t, origin[k]) for k, t in _state(compiled).items())  # the same start
    worst: dict[str, float] = {}
    r1_steps = 0
    for step in range(STEPS):
        if resync:
            compiled.load_state(copy.deepcopy(eager.state()))
            origin = _state(eager)
        stats_e, grads_e, state_e = eager.step(), _grads(eager), _state(eager)
        stats_c, grads_c, state_c = compiled.step(), _grads(compiled), _state(compiled)
        r1_steps += stats_e["r1"] > 0
        for name in (*TERMS, "logits_real", "logits_fake", "grad_d", "grad_g"):
            e, c = stats_e[name], stats_c[name]
            assert c == pytest.approx(e, rel=tol["rel"], abs=tol["abs"]), (precision, step, name)
            worst[name] = max(worst.get(name, 0.0), abs(c - e) / max(abs(e), tol["abs"] / tol["rel"]))
        measured = {
            "grads": _relative(grads_c, grads_e),
            "weights": _relative({k: state_c[k] - origin[k] for k in params},
                                 {k: state_e[k] - origin[k] for k in params}),
            "buffers": _relative({k: state_c[k] for k in state_c.keys() - params},
                                 {k: state_e[k] for k in state_e.keys() - params}),
        }
        for name, value in measured.items():
            worst[name] = max(worst.get(name, 0.0), value)
            assert value < tol[name], (precision, step, name, value)
    new_frames, new_graphs = counters["stats"]["unique_graphs"] - frames, _inductor_graphs() - graphs
    print(f"{precision}: {new_frames} frames, {new_graphs} inductor graphs; R1 check {compiled.R1_run.result}; "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert r1_steps == 2
    # dynamo's frames: G with and without grad (G's and D's step), D in D's and in G's step, R1; inductor's graphs:
    # each frame's forward and backward but G without grad's
    assert new_frames >= 5 and new_graphs >= 9, (new_frames, new_graphs)
    assert compiled.R1_run.result is not None and compiled.R1_run.result.ok and not compiled.R1_run.use_eager
    # autocast reaches into the compiled graphs: D's logits in the run's precision (a G step's call, as compiled)
    with compiled.autocast():
        logits = compiled.D_run(compiled.loss.augment(compiled.G_run(compiled._z())))
    assert logits.dtype == (amp or torch.float32)

    # R1's check leaves no trace: D's buffers, its gradients and the random streams as they were
    compiled.D.requires_grad_(True)  # as in D's steps (the G step left D frozen)
    reals = compiled.next_reals()[0]
    before, grads, rng, sample_rng = _state(compiled), _grads(compiled), torch.get_rng_state(), compiled.rng.get_state()
    assert check_compiled_r1(compiled.D, compiled.R1_run.compiled, reals).ok
    assert all(torch.equal(t, before[k]) for k, t in _state(compiled).items())
    assert _grads(compiled).keys() == grads.keys()
    assert all(torch.equal(g, grads[k]) for k, g in _grads(compiled).items())
    assert torch.equal(rng, torch.get_rng_state()) and torch.equal(sample_rng, compiled.rng.get_state())


def _compile_r1_as(wrong_factor: float):
    """A torch.compile that leaves the networks as they are and makes R1's "compiled" form the eager penalty times
    `wrong_factor`: R1's self-check without compiling anything."""
    def fake_compile(fn, **options):
        if isinstance(fn, nn.Module):
            return fn
        return lambda x, *labels: fn(x, *labels) * wrong_factor
    return fake_compile


@pytest.mark.parametrize("wrong_factor", [1.0, 2.0])
def test_the_trainer_runs_eager_r1_where_the_compiled_one_differs_and_trains_as_without_the_check(
        monkeypatch, wrong_factor):
    """A compiled R1 twice the true one (pytorch#136662's reproducer is off by 2) fails the check on the first R1
    batch: the Trainer logs why and runs the eager R1. Either way the check leaves no trace: the training is
    bitwise the eager Trainer's (its extra forwards' ISN power-iteration steps undone, the random streams
    untouched)."""
    reference = _trainer(False)
    expected = [reference.step() for _ in range(STEPS)]
    global_rng = torch.get_rng_state()  # each Trainer starts from torch.manual_seed(0)
    monkeypatch.setattr(torch, "compile", _compile_r1_as(wrong_factor))
    trainer = _trainer(True)
    logs: list[str] = []
    trainer.log = logs.append
    assert [trainer.step() for _ in range(STEPS)] == expected
    assert all(torch.equal(t, _state(reference)[k]) for k, t in _state(trainer).items())
    assert all(torch.equal(g, _grads(reference)[k]) for k, g in _grads(trainer).items())
    assert torch.equal(trainer.rng.get_state(), reference.rng.get_state())
    assert torch.equal(torch.get_rng_state(), global_rng)
    check = trainer.R1_run.result
    if wrong_factor == 1.0:
        assert check.ok and check.value == check.grad == 0 and not trainer.R1_run.use_eager and not logs
    else:
        assert not check.ok and check.value == pytest.approx(1.0) and check.grad == pytest.approx(1.0)
        assert trainer.R1_run.use_eager and len(logs) == 1, logs
        assert "pytorch/pytorch#136662" in logs[0] and "R1 runs eager from now on" in logs[0]
        assert "value 1.0e+00" in logs[0]


def test_without_a_log_the_fallback_is_a_warning(monkeypatch):
    monkeypatch.setattr(torch, "compile", _compile_r1_as(1.5))
    trainer = _trainer(True)
    with pytest.warns(UserWarning, match="R1: the compiled penalty differs"):
        trainer.step()


def test_the_r1_check_measures_each_weight_tensor_against_its_own_size():
    """A wrong gradient in one small weight tensor (D's patch-projection bias, a few % of the largest) shows at its
    own scale; 0 against 0 is no difference."""
    trainer = _trainer(False)
    D, reals = trainer.D, trainer.next_reals()[0]
    bias = D.patch_embed.bias

    def wrong_bias_gradient(x, labels=None):  # the penalty plus a term moving only the bias gradient, by 20% of it
        penalty = r1_penalty(D, x)
        (g,) = torch.autograd.grad(penalty, bias, retain_graph=True)
        return penalty + 0.2 * (bias * g.detach()).sum() - (0.2 * (bias * g.detach()).sum()).detach()

    result = check_compiled_r1(D, wrong_bias_gradient, reals)
    assert result.value < 1e-6 and result.grad == pytest.approx(0.2, rel=1e-3) and not result.ok
    assert check_compiled_r1(D, functools.partial(r1_penalty, D), reals) == (0.0, 0.0, R1_RTOL)


@pytest.mark.slow
def test_compiled_r1_matches_eager_on_the_mnist_preset_d():
    """The mnist preset's D (4 blocks of width 128, ISN, L2 attention, minibatch std, MLP head) on a batch of real
    digits augmented as in training: compiled R1's value and D-weight gradient within R1_RTOL of eager's, at
    initialisation and after a few (eager) training steps."""
    trainer = Trainer(vitgan.presets.get("mnist"), load_mnist5k(), torch.device("cpu"), None, seed=0)
    compiled = torch.compile(functools.partial(r1_penalty, trainer.D))
    results = []
    for _ in range(2):
        trainer.D.requires_grad_(True)
        with trainer.autocast():
            reals = trainer.loss.augment(trainer.next_reals()[0])
        results.append(check_compiled_r1(trainer.D, compiled, reals))
        for _ in range(4):
            trainer.step()
    print("mnist D:", *results)
    assert all(result.ok for result in results), results


class _Off(nn.Module):
    """A "compiled" network whose output is the true one times `factor`."""

    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs) * self.factor


@pytest.mark.parametrize(("factor", "ok"), [(1.0, True), (1.001, False)])
def test_step_difference_tells_a_compiled_step_that_trains_otherwise(monkeypatch, factor, ok):
    """vitgan.training.equality.step_difference (what benchmarks/gpu_check.sh runs on CUDA for each compile mode):
    from the same state, a "compiled" Trainer whose G and D are exact is within every fp32 tolerance (all
    differences 0: the same kernels); one whose G and D outputs are 0.1% off is not (its gradients differ by ~1e-3,
    ten times the fp32 tolerance)."""
    from vitgan.training.equality import step_difference

    eager = _trainer(False)
    eager.step()  # a state that is not the start
    monkeypatch.setattr(torch, "compile", lambda fn, **options: _Off(fn, factor) if isinstance(fn, nn.Module) else fn)
    compiled = _trainer(True)
    result = step_difference(eager, compiled, "fp32")
    assert result["ok"] is ok, result
    if ok:
        assert result["scalars"] == result["grads"] == result["weights"] == result["buffers"] == 0
    else:
        assert result["grads"] > 5 * TOLERANCES["fp32"]["grads"]
