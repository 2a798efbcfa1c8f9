"""vitgan's Inception metrics against torch-fidelity's, on the same weights and the same images.

    python benchmarks/fidelity_check.py --inception pt_inception-2015-12-05-6726825d.pth [--out results.json]

Loads the weight file into vitgan's `InceptionV3` and into torch-fidelity's `FeatureExtractorInceptionV3`, runs both
on the same uint8 images at 32, 64 and 299 pixels, RGB and grayscale (torch-fidelity takes 3 channels: the gray
images repeated), and prints the largest relative difference of the pool features and of the logits (relative to
the largest magnitude of each), then FID, KID and IS computed by each library from one set of features. Prints one
JSON object; tests/test_fidelity.py asserts on the same numbers with random weights.

torch-fidelity 0.4.0 (`pip install --no-deps torch-fidelity==0.4.0`) imports torchvision when it is imported; where
torchvision is not installed, the caller must provide it (the test installs a stand-in).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from vitgan.fileio import atomic_write
from vitgan.metrics.frechet import feature_statistics, frechet_distance
from vitgan.metrics.inception import load_inception
from vitgan.metrics.inception_score import inception_score
from vitgan.metrics.kid import kernel_inception_distance

SIZES = (32, 64, 299)


def images(count: int, size: int, channels: int, seed: int) -> torch.Tensor:
    """Smooth random uint8 images (count, channels, size, size): noise plus gradients, so features vary."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    base = rng.uniform(0, 1, (count, channels, 1, 1)) * ramp[None, None, :, None] + rng.uniform(0, 1, (count, 1, 1, 1))
    pixels = np.clip((base / 2 + rng.normal(0, 0.1, (count, channels, size, size))) * 255, 0, 255)
    return torch.from_numpy(pixels.astype(np.uint8))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def compare(weights: str | Path, *, count: int = 2, metric_count: int = 503, seed: int = 0) -> dict:
    """{'features': {'<size>-<rgb|gray>': {'pool': rel, 'logits': rel}}, 'fid': {...}, 'kid': {...}, 'is': {...}}."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    ours = load_inception(weights)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(weights))
    result: dict = {"features": {}}
    with torch.no_grad():
        for size in SIZES:
            for channels, name in ((3, "rgb"), (1, "gray")):
                x = images(count, size, channels, seed + size)
                pool, logits = ours(x)
                ref_pool, ref_logits = theirs(x.expand(-1, 3, -1, -1).contiguous())
                result["features"][f"{size}-{name}"] = {"pool": relative(pool, ref_pool),
                                                        "logits": relative(logits, ref_logits)}
    # FID, KID and IS from one set of features (Gaussian stand-ins for pool features and logits)
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (metric_count, 64)) @ rng.normal(0, 1, (64, 64))
    b = rng.normal(0.2, 1, (metric_count, 64)) @ rng.normal(0, 1, (64, 64))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    fid = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    ref_fid = fid_statistics_to_metric(fid_features_to_statistics(ta), fid_features_to_statistics(tb), False)
    result["fid"] = {"vitgan": fid, "torch_fidelity": ref_fid["frechet_inception_distance"]}
    # subsets of all samples: every draw is the whole set in some order, so both libraries' RNGs give one value
    kid = kernel_inception_distance(b, a, num_subsets=3, max_subset_size=metric_count)[0]
    ref_kid = kid_features_to_metric(ta, tb, kid_subsets=3, kid_subset_size=metric_count, verbose=False)
    result["kid"] = {"vitgan": kid, "torch_fidelity": ref_kid["kernel_inception_distance_mean"]}
    logits = rng.normal(0, 3, (metric_count, 1008))
    mean, std = inception_score(logits)
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    result["is"] = {"vitgan": [mean, std], "torch_fidelity": [ref["inception_score_mean"],
                                                               ref["inception_score_std"]]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inception", required=True, help="the Inception weight file (pt_inception-2015-12-05)")
    parser.add_argument("--images", type=int, default=2, help="images per size and colour mode")
    parser.add_argument("--out", help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    try:
        import torch_fidelity  # noqa: F401 - its import needs torchvision
    except ImportError as error:
        print(f"fidelity_check: cannot import torch_fidelity ({error}); pip install --no-deps "
              "torch-fidelity==0.4.0 (and torchvision)", file=sys.stderr)
        return 2
    result = {"inception": str(args.inception), "torch": torch.__version__, **compare(args.inception,
                                                                                       count=args.images)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write(Path(args.out), lambda tmp: tmp.write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
