"""Evaluating a generator: metric names, features of real and generated images, cached reference features.

Metric names are `<kind><count>[k]`: fid50k, kid50k, is50k, pr50k, dfid5k (and fid10k, fid2000, ...), where the count
is the number of generated images (latent seeds 0..count-1, psi 1, quantised to uint8 as a PNG would be). The real
side of fid/kid/pr is the whole dataset (at most `max_real` images); its Inception features are cached on disk in
`cache_dir()/reference/`, keyed by the pixels of the dataset, the Inception weights' checksum and the protocol, so
a second evaluation on the same data skips them and any change of the data recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitgan.config import ConfigError
from vitgan.data import ImageData
from vitgan.fileio import atomic_write
from vitgan.images import quantize
from vitgan.metrics import inception
from vitgan.metrics.frechet import feature_statistics, frechet_distance
from vitgan.metrics.inception_score import inception_score
from vitgan.metrics.kid import kernel_inception_distance
from vitgan.metrics.precision_recall import precision_recall
from vitgan.sampling import latents
from vitgan.training.distributed import World, barrier, gather

KINDS = {
    "fid": "Frechet Inception distance, generated vs all reals",
    "kid": "kernel Inception distance (100 subsets of <= 1000), generated vs all reals",
    "is": "Inception score, 10 splits",
    "pr": "precision and recall, k = 3, generated vs as many reals",
    "dfid": "digit FID (the shipped digit classifier's features), 32x32 digits only",
}
INCEPTION_KINDS = {"fid", "kid", "is", "pr"}
MIN_COUNT = {"fid": 2, "kid": 2, "is": 10, "pr": 4, "dfid": 2}  # covariance, a pair, 10 splits, k = 3 neighbours
CACHE_ENV = "VITGAN_CACHE"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class Metric:
    name: str  # as written: fid50k
    kind: str  # fid | kid | is | pr | dfid
    num_gen: int  # generated images


def parse_metrics(text: str) -> list[Metric]:
    """'fid50k,kid10k' -> [Metric('fid50k', 'fid', 50000), Metric('kid10k', 'kid', 10000)]."""
    metrics = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        m = re.fullmatch(r"(fid|kid|is|pr|dfid)(\d+)(k?)", name)
        if m is None:
            raise ConfigError(f"metrics: {name!r} is not <kind><count>[k] with kind one of {', '.join(KINDS)} "
                              "(e.g. fid50k)")
        metric = Metric(name, m.group(1), int(m.group(2)) * (1000 if m.group(3) else 1))
        if metric.num_gen < MIN_COUNT[metric.kind]:
            raise ConfigError(f"metrics: {name} needs at least {MIN_COUNT[metric.kind]} generated images")
        metrics.append(metric)
    if not metrics:
        raise ConfigError("metrics: no metric named (e.g. fid50k,kid50k,is50k,pr50k)")
    if len({m.name for m in metrics}) != len(metrics):
        raise ConfigError(f"metrics: {text!r} names a metric twice")
    return metrics


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where reference features are kept: `path`, else $VITGAN_CACHE, else ~/.cache/vitgan."""
    return Path(path or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vitgan").expanduser()


def dataset_digest(images: torch.Tensor) -> str:
    """sha256 of a uint8 image tensor's shape and pixels: the identity of a dataset's content."""
    digest = hashlib.sha256(repr(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


class InceptionFeatures:
    """Pool features and unbiased logits of uint8 images, `batch` at a time on `device`."""

    def __init__(self, net: inception.InceptionV3, *, weights_sha256: str, batch: int = 64) -> None:
        self.net, self.batch = net, batch
        self.device = next(net.parameters()).device
        self.protocol = {"graph": "inception-2015-12-05", "weights_sha256": weights_sha256,
                         "resize": "tf1-bilinear-299-no-antialias", "input": "uint8 (x-128)/128", "features": "pool_3"}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        feats, logits = [], []
        for i in range(0, len(images), self.batch):
            pool, logit = self.net(images[i:i + self.batch].to(self.device))
            feats.append(pool.cpu())
            logits.append(logit.cpu())
        return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def _progress(total: int, desc: str, enabled: bool):  # noqa: ANN202 - a tqdm bar
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, leave=False, mininterval=1)


def reference_features(extract: InceptionFeatures, data: ImageData, *, max_real: int | None = None,
                       cache: Path | None = None, progress: bool = False,
                       log: Callable[[str], None] = print) -> np.ndarray:
    """Inception pool features (N, 2048) of the first `max_real` images of `data`, from the cache when there."""
    images = data.images[:max_real] if max_real else data.images
    key = {"format": _CACHE_FORMAT, "data": dataset_digest(images), **extract.protocol}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    label = re.sub(r"[^A-Za-z0-9_.]+", "_", data.name)
    path = (cache or cache_dir()) / "reference" / f"{label}-{len(images)}-{name}.npy"
    if path.is_file():
        try:
            features = np.load(path, allow_pickle=False)
            if features.shape == (len(images), inception.FEATURES):
                log(f"reference features of {data.name}: {path} (cached)")
                return features
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed and replaced
    feats = []
    with _progress(len(images), f"Inception features of {data.name}", progress) as bar:
        for i in range(0, len(images), 1000):
            feats.append(extract(images[i:i + 1000])[0])
            bar.update(len(feats[-1]))
    features = np.concatenate(feats)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.save(tmp, features, allow_pickle=False))
        log(f"reference features of {data.name}: computed, cached in {path}")
    except OSError as error:  # a read-only or full cache is not a reason to lose the evaluation
        log(f"reference features of {data.name}: computed; not cached ({error.strerror or error})")
    return features


class Evaluator:
    """Computes the given metrics for a generator against `data`; built once, called per snapshot or tick.

    Inception is loaded (and the reference features computed or read from the cache) only when an Inception metric
    is asked for; `dfid` needs 1x32x32 data.
    """

    def __init__(self, metrics: list[Metric], data: ImageData, *, inception_path: str | None = None,
                 device: torch.device | str = "cpu", batch: int = 64, max_real: int | None = None,
                 cache: str | os.PathLike | None = None, progress: bool = False,
                 log: Callable[[str], None] = print, world: World | None = None) -> None:
        self.metrics, self.batch, self.progress = metrics, batch, progress
        world = self.world = world or World()
        kinds = {m.kind for m in metrics}
        self.extract: InceptionFeatures | None = None
        self.real: np.ndarray | None = None
        if kinds & INCEPTION_KINDS:
            weights = inception.weights_path(inception_path)
            net = inception.load_inception(weights, device=device)
            self.extract = InceptionFeatures(net, weights_sha256=inception.sha256_file(weights), batch=batch)
            if kinds & {"fid", "kid", "pr"}:
                if not world.is_main:
                    barrier(world)  # rank 0 computes the reference features and caches them; the others read them
                self.real = reference_features(self.extract, data, max_real=max_real, cache=cache_dir(cache),
                                               progress=progress, log=log)
                if world.is_main:
                    barrier(world)
                self.real_mu, self.real_sigma = feature_statistics(self.real)
        self.digits = None
        if "dfid" in kinds:
            if tuple(data.images.shape[1:]) != (1, 32, 32):
                shape = "x".join(map(str, data.images.shape[1:]))
                raise ConfigError(f"metrics: dfid needs 1x32x32 digits, the data's images are {shape}")
            from vitgan.metrics.digits import DigitFID

            self.digits = DigitFID.of(data)

    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> dict[str, float]:
        """{metric name (and name_std / name_precision / name_recall): value} for the generator in eval mode."""
        count = max(m.num_gen for m in self.metrics)
        device = next(generator.parameters()).device
        world, step = self.world, self.batch * self.world.size
        chunks: dict[int, tuple] = {}  # first seed -> (features, logits, digit images) of this rank's chunks
        with _progress(count, "generating and measuring", self.progress and world.is_main) as bar:
            for start in range(world.rank * self.batch, count, step):  # the ranks take turns, chunk by chunk
                z = latents(range(start, min(start + self.batch, count)), generator.z_dim).to(device)
                images = quantize(generator(z).float()).cpu()  # (B, C, H, W) uint8, as saved images would be
                pool, logit = self.extract(images) if self.extract is not None else (None, None)
                digits = images.float() / 127.5 - 1 if self.digits is not None else None
                chunks[start] = (pool, logit, digits)
                bar.update(len(images) * world.size)
        for other in gather(chunks, world):  # every rank ends with every chunk, in seed order
            chunks.update(other)
        ordered = [chunks[start] for start in sorted(chunks)]
        fake = np.concatenate([c[0] for c in ordered]) if self.extract is not None else None
        fake_logits = np.concatenate([c[1] for c in ordered]) if self.extract is not None else None
        digits = [c[2] for c in ordered]
        results: dict[str, float] = {}
        for m in self.metrics:
            n = m.num_gen
            if m.kind == "fid":
                results[m.name] = frechet_distance(*feature_statistics(fake[:n]), self.real_mu, self.real_sigma)
            elif m.kind == "kid":
                results[m.name], results[f"{m.name}_std"] = kernel_inception_distance(self.real, fake[:n])
            elif m.kind == "is":
                results[m.name], results[f"{m.name}_std"] = inception_score(fake_logits[:n])
            elif m.kind == "pr":
                real = self.real[np.random.default_rng(0).permutation(len(self.real))[:n]]
                results[f"{m.name}_precision"], results[f"{m.name}_recall"] = precision_recall(real, fake[:n])
            else:  # dfid
                results[m.name] = self.digits(torch.cat(digits)[:n])["digit_fid"]
        return results
