"""Training bit for bit against an earlier commit: the same tiny runs with the baseline's code and with this tree's.

    python benchmarks/bitexact.py --baseline b324299      # both trees; appends to benchmarks/results/bitexact.jsonl
    python benchmarks/bitexact.py --child                 # one tree: whatever `vitgan` is first on sys.path

A refactor that must not change training (issue 26's) shows it here: the baseline is checked out as a temporary git
worktree, and each tree trains in a process of its own (one thread, so that float sums happen in one order).

Three runs, eager, fp32, on the bundled digits ("mnist", with its per-tick digit FID), R1 every 2nd D step, bCR,
ADA and mirroring on:
  straight  - 12 steps, ticks of 2 steps, a snapshot every 2 ticks;
  resumed   - 6 steps, then resumed from its training state to the 12;
  rollback  - 12 steps with --nan-policy rollback and a NaN poisoned into G's loss once.
Prints one sha256 per run over every tensor and value of the final training state and network snapshot and the
non-timing fields of stats.jsonl, then one over all three. The hashes must be equal before and after a refactor.

A change that adds a Config field or a stats.jsonl column whose default leaves training as it was names it with
`--new NAME=VALUE` (repeatable; e.g. `--new gan_loss=ns --new r2_gamma=0 --new r2=0`): a key of that name holding
that value is left out of both trees' hashes (the baseline has no such key), any other value of it is hashed.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bitexact.jsonl"

TINY = dict(g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=1, g_fourier_dim=8,
            g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64, batch=4, r1_gamma=0.1, r1_interval=2,
            bcr_real=2.0, bcr_fake=2.0, ada_target=0.6, ada_kimg=1.0)
STEPS, TICK = 12, 2  # steps of batch 4


NEW: dict = {}  # --new: keys the tree adds, with the value that leaves training unchanged


def feed(h, value, name=""):
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            if key in NEW and value[key] == NEW[key]:
                continue  # a field the tree adds, at the value that leaves training unchanged
            feed(h, value[key], f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            feed(h, item, f"{name}[{i}]")
    else:
        h.update(f"{name}={value!r}".encode())


def timing(key):
    return "time" in key or "sec" in key or key == "maintenance_s"


def digest(run: Path) -> str:
    from vitgan.training import checkpoint

    h = hashlib.sha256()
    state = sorted(run.glob("training-state-*.pt"))[-1]
    feed(h, checkpoint.load_training_state(state), state.name)
    snapshot = sorted(run.glob("network-snapshot-*.safetensors"))[-1]
    cfg, nets, meta = checkpoint.read_snapshot(snapshot)
    feed(h, {"config": cfg.to_dict(), "nets": nets, "meta": meta}, snapshot.name)
    for line in (run / "stats.jsonl").read_text().splitlines():
        row = json.loads(line)
        feed(h, {k: v for k, v in row.items() if not timing(k)}, "row")
    return h.hexdigest()


def options(outdir: Path, **kw):
    from vitgan.training.options import RunOptions

    return RunOptions(preset="mnist", data="mnist", outdir=str(outdir), seed=7, precision="fp32", device="cpu",
                      tick_kimg=TICK * 4 / 1000, snap=2, keep=2, compile=False, mirror=True, **kw)


def run_straight(root: Path) -> Path:
    from vitgan import presets
    from vitgan.training.loop import train

    return train(presets.get("mnist", **TINY, kimg=STEPS * 4 / 1000), options(root / "straight"))


def run_resumed(root: Path) -> Path:
    from vitgan import presets
    from vitgan.training import checkpoint
    from vitgan.training.loop import resume_config, train

    half = train(presets.get("mnist", **TINY, kimg=STEPS * 2 / 1000), options(root / "resumed"))
    state_path = sorted(half.glob("training-state-*.pt"))[-1]
    state = checkpoint.load_training_state(state_path)
    cfg = resume_config(state, {"kimg": STEPS * 4 / 1000})
    return train(cfg, options(root / "resumed", resume=str(state_path)), resume_state=state)


def run_rollback(root: Path) -> Path:
    from vitgan import presets
    from vitgan.training import loss as loss_module
    from vitgan.training.loop import train

    original, calls = loss_module.g_nonsaturating_loss, [0]

    def poisoned(logits):
        calls[0] += 1
        out = original(logits)
        return out * float("nan") if calls[0] == 7 else out

    loss_module.g_nonsaturating_loss = poisoned
    try:
        return train(presets.get("mnist", **TINY, kimg=STEPS * 4 / 1000), options(root / "rollback",
                                                                                   nan_policy="rollback"))
    finally:
        loss_module.g_nonsaturating_loss = original


def child() -> None:
    import torch

    import vitgan

    print("vitgan from", Path(vitgan.__file__).parent, file=sys.stderr)
    torch.set_num_threads(1)
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (("straight", run_straight), ("resumed", run_resumed), ("rollback", run_rollback)):
            hashes[name] = digest(run(Path(tmp)))
    hashes["all"] = hashlib.sha256("".join(hashes.values()).encode()).hexdigest()
    print(json.dumps(hashes))


def hashes_of(tree: Path, new: list[str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, __file__, "--child", *(f"--new={item}" for item in new)], cwd=tree,
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b324299", help="the commit to compare with")
    parser.add_argument("--child", action="store_true", help="train with the vitgan on sys.path and print hashes")
    parser.add_argument("--new", action="append", default=[], metavar="NAME=VALUE",
                        help="a key the tree adds and the value that leaves training unchanged (repeatable)")
    args = parser.parse_args()
    for item in args.new:
        key, _, text = item.partition("=")
        try:
            NEW[key] = json.loads(text)
        except json.JSONDecodeError:
            NEW[key] = text  # a string value, e.g. gan_loss=ns
    if args.child:
        child()
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.baseline], cwd=ROOT, check=True)
        try:
            before = hashes_of(base, args.new)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    after = hashes_of(ROOT, args.new)
    record = {"date": time.strftime("%Y-%m-%d"), "baseline": args.baseline, "tree": commit, "new": args.new,
              "baseline_hashes": before, "tree_hashes": after, "equal": before == after}
    print(json.dumps(record))
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0 if before == after else 1


if __name__ == "__main__":
    sys.exit(main())
