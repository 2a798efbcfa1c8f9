"""Train the digit-FID classifier on the bundled MNIST digits and write its weights into the package.

    python benchmarks/train_digit_classifier.py

4,500 digits train, 500 are held out; random translations and small zooms as augmentation; prints the held-out
accuracy per epoch and writes vitgan/metrics/digit_classifier.safetensors (must reach >= 98% held out).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vitgan.data import load_mnist5k
from vitgan.metrics.digits import WEIGHTS, DigitClassifier
from vitgan.training.augment import scale, translation


def main(epochs: int = 30, seed: int = 0) -> None:
    torch.manual_seed(seed)
    data = load_mnist5k(seed=seed)
    x, y = data.batch(torch.arange(len(data))), data.labels
    x_train, y_train, x_test, y_test = x[:4500], y[:4500], x[4500:], y[4500:]
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((4500 + 63) // 64))
    start = time.time()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(4500)
        for i in range(0, 4500, 64):
            idx = order[i:i + 64]
            batch = translation(scale(x_train[idx] + 1, std=0.1), ratio=0.1) - 1  # shifts and zooms fill black
            loss = F.cross_entropy(net(batch), y_train[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
        print(f"epoch {epoch + 1:2d}/{epochs}  loss {loss.item():.3f}  held-out accuracy {accuracy:.4f}  "
              f"({time.time() - start:.0f} s)", flush=True)
    params = sum(p.numel() for p in net.parameters())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(WEIGHTS))
    print(f"held-out accuracy {accuracy:.4f} on 500 digits; {params:,} parameters; wrote {WEIGHTS} "
          f"({WEIGHTS.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
