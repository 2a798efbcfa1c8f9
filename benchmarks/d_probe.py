"""How fast does each discriminator learn to tell real digits from a frozen generator's samples?

D alone is trained (Adam (0, 0.99), batch 16 real + 16 fake, non-saturating logistic loss, bf16 autocast, one CPU
thread) against 2,048 fixed samples of a snapshot's EMA generator, with the training augmentation; every few steps
its accuracy and logit gap are measured on 512 held-out real and 512 held-out fake images without augmentation, in
pure batches of 16. A variant is `name=field:value;field:value` with Config fields, or `aug:POLICY`, `p:P`, `lr:LR`.

    python benchmarks/d_probe.py SNAPSHOT vit= "noaug=p:0.0" "cnn=d_arch:cnn" --out benchmarks/results/d_probe.jsonl

Each variant prints one line and appends one JSON line (variant, settings, and per checkpoint step the gap and the
accuracy) to --out.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from vitgan import build_discriminator, presets
from vitgan.config import Config
from vitgan.data import load_mnist5k
from vitgan.pretrained import load
from vitgan.sampling import generate, latents
from vitgan.training.augment import diff_augment

CHECKPOINTS = (50, 100, 200, 300)


def probe(spec: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
          preset: str) -> dict:
    name, _, rest = spec.partition("=")
    settings = dict(item.split(":", 1) for item in rest.split(";") if item)
    lr = float(settings.pop("lr", 5e-4))
    cfg = presets.get(preset, **{k: Config.parse_value(k, v) for k, v in settings.items() if k not in ("aug", "p")})
    policy, p = settings.get("aug", cfg.augment), float(settings.get("p", cfg.augment_p))
    torch.manual_seed(0)
    d = build_discriminator(cfg).train()
    opt = torch.optim.Adam(d.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2))
    g = torch.Generator().manual_seed(0)
    start, curve = time.time(), {}
    for step in range(1, max(CHECKPOINTS) + 1):
        reals = train[0][torch.randint(0, len(train[0]), (16,), generator=g)]
        fakes = train[1][torch.randint(0, len(train[1]), (16,), generator=g)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            real_logits = d(diff_augment(reals, policy, p, g, fill=cfg.augment_fill)).float()
            fake_logits = d(diff_augment(fakes, policy, p, g, fill=cfg.augment_fill)).float()
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in CHECKPOINTS:
            d.eval()
            with torch.no_grad():
                a, b = (torch.cat([d(x[i:i + 16]) for i in range(0, len(x), 16)]) for x in test)
            d.train()
            accuracy = ((a > 0).float().mean() + (b < 0).float().mean()).item() / 2
            curve[step] = {"gap": round((a.mean() - b.mean()).item(), 3), "accuracy": round(accuracy, 3)}
    return {"variant": name, "settings": settings, "lr": lr, "policy": policy, "p": p, "steps": curve,
            "seconds": round(time.time() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshot", help="a network snapshot whose EMA generator makes the fakes")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--preset", default="mnist")
    parser.add_argument("--out", help="append one JSON line per variant to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = load(args.snapshot)
    fakes = generate(generator, latents(range(200_000, 202_560), generator.z_dim), batch=256)
    reals = load_mnist5k().batch(torch.arange(5000))
    train, test = (reals[:-512], fakes[:-512]), (reals[-512:], fakes[-512:])
    for spec in args.variants:
        row = {"snapshot": args.snapshot, **probe(spec, train, test, args.preset)}
        print(f"{row['variant']:14s} " + "  ".join(f"{s}: gap {v['gap']:.2f} acc {v['accuracy']:.3f}"
                                                  for s, v in row["steps"].items()), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
