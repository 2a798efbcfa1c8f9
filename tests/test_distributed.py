"""Data-parallel training on the CPU with gloo: 2 ranks x B equals 1 process x 2B; torchrun end to end; the local
ranks `vitgan train` starts itself."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_training import TINY

from vitgan import distributed, presets
from vitgan.cli import main
from vitgan.config import ConfigError
from vitgan.data import ImageData
from vitgan.distributed import World
from vitgan.training.trainer import Trainer

# bCR, lazy R1 on the first step, DiffAugment, mirroring and the minibatch std all on (its groups of 4 consecutive
# samples are the same on 2 ranks of 4 or 8 as in one process)
CFG = presets.get("mnist", g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=1,
                  g_fourier_dim=8, g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64, d_mbstd=True,
                  batch=16, bcr_real=2.0, bcr_fake=2.0, r1_gamma=0.1, r1_interval=2, augment_p=0.9)


def _data() -> ImageData:
    g = torch.Generator().manual_seed(1)
    return ImageData(torch.randint(0, 256, (20, 1, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(20), "r")


def _steps(world: World, batch_gpu: int, steps: int = 2) -> dict[str, dict[str, torch.Tensor]]:
    """The first D (with R1) and G gradients, averaged over the ranks, then the weights after `steps` steps."""
    torch.manual_seed(0)
    trainer = Trainer(CFG, _data(), torch.device("cpu"), None, mirror=True, seed=3, world=world, batch_gpu=batch_gpu)
    grads = {}
    for phase, net in (("Dboth", trainer.D), ("Gmain", trainer.G)):
        trainer.accumulate(phase)
        grads[phase] = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    for _ in range(steps):
        trainer.step()
    return {"G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "G_ema": trainer.G_ema.state_dict(), **grads}


def _rank(rank: int, size: int, init_file: str, batch_gpu: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    finished = False
    try:
        torch.manual_seed(100 + rank)  # the ranks' own streams differ; the result must not depend on them
        state = _steps(World(rank, size), batch_gpu=batch_gpu)
        if rank == 0:
            torch.save(state, out)
        finished = True
    finally:  # as `vitgan` does: a barrier when both finished, then the group destroyed (its threads joined)
        distributed.shutdown(clean=finished)
    distributed.exit_now(0)  # and, finished, the process ended without the interpreter's finalisation


@pytest.mark.parametrize("batch_gpu", [8, 4])  # 2 ranks x 8 = 16 in one round; 2 ranks x 4 x 2 rounds of accumulation
def test_two_ranks_equal_one_process_with_twice_the_images_per_round(tmp_path, batch_gpu):
    out = tmp_path / "two_ranks.pt"
    mp.spawn(_rank, args=(2, str(tmp_path / "rendezvous"), batch_gpu, str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    one = _steps(World(), batch_gpu=2 * batch_gpu)
    for phase in ("Dboth", "Gmain"):  # the all-reduce averages: the gradient of the whole batch, not twice it
        scale = max(g.abs().max().item() for g in one[phase].values())
        for key, grad in one[phase].items():
            torch.testing.assert_close(two[phase][key], grad, rtol=1e-4, atol=1e-6 * scale, msg=f"{phase} {key}")
    for net in ("G", "D", "G_ema"):
        for key, value in one[net].items():
            # biases the attention cannot see (a key bias shifts a whole softmax row; L2 attention's shared q/k bias
            # cancels in q - k): their gradient is pure round-off, which Adam's first steps amplify to +-lr
            if key.endswith(("attn.k.bias", "attn.qk.bias")):
                continue
            close = torch.isclose(two[net][key], value, rtol=1e-4, atol=1e-6)
            # Adam also turns any other gradient element that is round-off small into a +-lr step; a wrong split
            # of the batch would move most elements, not a stray one
            assert close.float().mean() >= 0.99, f"{net}.{key}: {int((~close).sum())} of {close.numel()} differ"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "vitgan", *args]


ENV = dict(os.environ, OMP_NUM_THREADS="1")


def test_torchrun_trains_on_two_ranks_and_resumes_on_one(tmp_path, digits, inception_weights, capsys):
    outdir = tmp_path / "runs"
    run = subprocess.run(_torchrun("train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--kimg", "0.016",
                                   "--tick", "0.008", "--snap", "1", "--d-mbstd", "false", "--metrics", "fid10",
                                   "--metric-every", "2", "--inception", str(inception_weights)),
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    (folder,) = outdir.iterdir()  # only rank 0 writes
    log = (folder / "log.txt").read_text()
    assert "2 rank(s) x 2 images x 1 round(s) = batch 4" in log
    assert log.count("tick 2 ") == 1 and run.stdout.count("tick 2 ") == 1  # one status line, from rank 0
    options = json.loads((folder / "training_options.json").read_text())
    assert options["ranks"] == 2
    rows = [json.loads(line) for line in (folder / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [0.008, 0.016]
    # the FID of the final tick, its samples generated and measured half on each rank, equals one process's
    snapshot = folder / "network-snapshot-000000016.safetensors"
    assert main(["eval", "--ckpt", str(snapshot), "--metrics", "fid10", "--inception", str(inception_weights)]) == 0
    alone = json.loads(capsys.readouterr().out)["results"]["fid10"]
    assert rows[-1]["fid10"] == pytest.approx(alone, rel=1e-3)
    resumed = subprocess.run([sys.executable, "-m", "vitgan", "train", "--resume", str(folder), "--data", str(digits),
                              "--outdir", str(outdir), *TINY, "--kimg", "0.024", "--tick", "0.008",
                              "--d-mbstd", "false"], capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [json.loads(line) for line in sorted(outdir.iterdir())[-1].joinpath("stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [0.024]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _training_ranks(job: subprocess.Popen, outdir: Path) -> list[int]:
    """The 2 worker processes of a torchrun `job`, once training has started (its first stats row is written)."""
    deadline = time.time() + 120
    while not list(outdir.glob("*/stats.jsonl")) and time.time() < deadline:
        time.sleep(0.5)
    workers = _children(job.pid)
    assert len(workers) == 2, workers
    return workers


def test_a_dead_rank_ends_the_job_with_an_error(tmp_path, digits):
    job = subprocess.Popen(_torchrun("train", "--data", str(digits), "--outdir", str(tmp_path), *TINY, "--kimg",
                                     "1000", "--tick", "0.008", "--d-mbstd", "false", "--dist-timeout", "20"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        workers = _training_ranks(job, tmp_path)
        os.kill(workers[-1], signal.SIGKILL)
        killed = time.time()
        _, err = job.communicate(timeout=90)
        assert job.returncode != 0 and time.time() - killed < 60
        assert "error" in err.lower()
    finally:
        if job.poll() is None:
            job.kill()


def test_local_ranks_share_the_batch_in_whole_minibatch_std_groups():
    from vitgan.config import ConfigError
    from vitgan.training.options import RunOptions, available_cores, local_ranks

    cfg, opts = presets.get("mnist"), RunOptions(device="cpu")  # 240 kimg, batch 16, minibatch std (groups of 4)
    assert [local_ranks(cfg, opts, cores, launched=False) for cores in (1, 2, 3, 16)] == [1, 2, 2, 4]
    assert local_ranks(cfg.replace(d_mbstd=False), opts, 16, launched=False) == 16  # no groups: any divisor
    assert local_ranks(cfg.replace(d_mbstd_group=8), opts, 16, launched=False) == 2  # shares of 8, one group each
    assert local_ranks(cfg.replace(d_pack=2), opts, 16, launched=False) == 2  # a group of 4 packs of 2: 8 images
    assert local_ranks(cfg.replace(d_pack=2, d_mbstd=False), opts, 16, launched=False) == 8  # whole packs
    assert local_ranks(cfg.replace(kimg=1.0), opts, 2, launched=False) == 1  # a short run stays one process
    assert local_ranks(cfg, RunOptions(device="cpu", batch_gpu=8), 2, launched=False) == 1
    assert local_ranks(cfg, opts, 2, launched=True) == 1  # a rank itself never starts more
    assert local_ranks(cfg.replace(kimg=1.0), RunOptions(device="cpu", ranks=2), 1, launched=False) == 2  # pinned
    # with AMX tiles one process of all the threads did as much or more (benchmarks/README.md); --ranks still pins
    assert local_ranks(cfg, opts, 2, launched=False, amx=True) == 1
    assert local_ranks(cfg, RunOptions(device="cpu", ranks=2), 2, launched=False, amx=True) == 2
    with pytest.raises(ConfigError, match=r"^ranks: 3 ranks cannot share batch 16") as info:
        local_ranks(cfg, RunOptions(device="cpu", ranks=3), 4, launched=False)
    assert str(info.value).endswith("use 2 or 4 ranks, or a batch that is a multiple of 12 (e.g. 12 or 24)")
    assert available_cores({"OMP_NUM_THREADS": "1"}) == 1  # each of `vitgan ablate`'s one-thread runs
    assert available_cores({}) == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags Linux lists")
def test_amx_probe_agrees_with_the_cpu_flags():
    from vitgan.training.device import has_amx

    flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    assert has_amx() == ("amx_tile" in flags)


def test_train_starts_its_local_ranks_and_they_share_the_per_tick_digit_fid(tmp_path):
    """`vitgan train --ranks 2` starts 2 processes under torchrun; their per-tick digit FID (each rank generating
    and classifying half of the 1,000 samples) equals one process's measure of the final EMA generator."""
    from vitgan.data import load_mnist5k
    from vitgan.metrics.digits import DigitFID
    from vitgan.pretrained import load
    from vitgan.sampling import generate, latents
    from vitgan.training.loop import DIGIT_FID_SEEDS

    outdir = tmp_path / "runs"
    assert main(["train", "--outdir", str(outdir), *TINY, "--batch", "8", "--kimg", "0.016", "--tick", "0.016",
                 "--ranks", "2"]) == 0
    (folder,) = outdir.iterdir()
    assert "2 rank(s) x 4 images x 1 round(s) = batch 8" in (folder / "log.txt").read_text()
    assert json.loads((folder / "training_options.json").read_text())["ranks"] == 2
    row = json.loads((folder / "stats.jsonl").read_text().splitlines()[-1])
    G_ema = load(next(folder.glob("network-snapshot-*.safetensors")))
    alone = DigitFID.of(load_mnist5k())(generate(G_ema, latents(DIGIT_FID_SEEDS, G_ema.z_dim), batch=250))
    assert row["digit_fid"] == pytest.approx(alone["digit_fid"], rel=1e-6)
    assert row["classes"] == alone["classes"] and row["confident"] == pytest.approx(alone["confident"])


def test_local_ranks_end_when_their_launcher_is_killed(tmp_path, digits):
    """From a command line `vitgan train` becomes torchrun; SIGKILL it (no signal to forward) and its ranks must
    still end, not train on alone (each arms Linux's parent-death signal)."""
    job = subprocess.Popen([sys.executable, "-m", "vitgan", "train", "--data", str(digits), "--outdir", str(tmp_path),
                            *TINY, "--kimg", "1000", "--tick", "0.008", "--d-mbstd", "false", "--ranks", "2",
                            "--no-compile"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    workers: list[int] = []
    try:
        workers = _training_ranks(job, tmp_path)
        job.kill()
        job.wait(timeout=30)
        deadline = time.time() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:
            time.sleep(0.5)
        alive = [pid for pid in workers if Path(f"/proc/{pid}/stat").exists()
                 and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
        assert not alive, f"ranks {alive} still run after their launcher was killed"
    finally:
        job.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("batch_gpu", "ranks"), [(6, 1), (3, 2), (32, 1)])
def test_a_batch_gpu_that_does_not_divide_the_batch_says_which_values_work(batch_gpu, ranks):
    with pytest.raises(ConfigError) as error:
        Trainer(CFG.replace(d_pack=2), _data(), torch.device("cpu"), None, world=World(0, ranks), batch_gpu=batch_gpu)
    works = {1: "2, 4, 8, 16", 2: "2, 4, 8"}[ranks]  # even divisors of 16 / ranks (whole packs of 2)
    assert str(error.value).endswith(f"it can be {works}") and str(error.value).startswith("batch_gpu: ")


def test_a_finished_rank_ends_with_its_code_and_its_output_flushed():
    """`exit_now` skips the interpreter's finalisation (where a gloo thread can abort the process) but not what the
    rank printed or logged: stdout to a pipe is block-buffered, so unflushed output would be lost."""
    code = ("import logging, sys\n"
            "from vitgan import distributed\n"
            "logging.basicConfig(stream=sys.stderr, format='%(message)s')\n"
            "print('tick 1 done', end='')\n"
            "logging.warning('logged')\n"
            "distributed.exit_now(3)\n"
            "print('never')\n")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a launcher's pipe usually is
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=buffered)
    assert (run.returncode, run.stdout, run.stderr.strip()) == (3, "tick 1 done", "logged")
