"""Evaluating a generator or a set of images: metric names, features of real and generated images, cached reference
features.

Metric names follow StyleGAN2-ADA (`metric_main.py`): `<kind><count>[k][<neighbourhood>][_full]`, e.g. fid50k_full,
kid50k_full, pr50k3_full, is50k, fid50k, dfid5k, modes26k. The count is the number of generated images (latent seeds
0..count-1, psi 1, quantised to uint8 as a PNG would be). is and modes use no real images; `real_modes` gives the
modes of as many reals, the ceiling of a generator of the data. The real side of fid/kid/pr/dfid:
- with `_full`: the whole dataset (kid at most 1,000,000 images, pr at most 200,000, as StyleGAN2-ADA);
- without: as many real images as generated ones (fid50k: 50,000 reals), all of them when the dataset is smaller.
Where fewer reals than the dataset holds are used, they are a fixed random subset (the first ones of a seed-0
permutation of the dataset, so a smaller subset is part of a larger one). Reference features of the reals are cached
on disk in `cache_dir()/reference/`, keyed by their pixels, the Inception weights' checksum and the protocol, so a
second evaluation on the same data skips them and any change of the data recomputes them.
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
from vitgan.distributed import World, barrier, gather
from vitgan.fileio import atomic_write
from vitgan.images import quantize
from vitgan.metrics import inception
from vitgan.metrics.digits import agreement_by_class, class_agreement, classify
from vitgan.metrics.frechet import feature_statistics, frechet_distance
from vitgan.metrics.inception_score import inception_score
from vitgan.metrics.kid import kernel_inception_distance
from vitgan.metrics.modes import ModeCounter, mode_measures, mode_of
from vitgan.metrics.precision_recall import precision_recall
from vitgan.sampling import label_draws, latents

KINDS = {
    "fid": "Frechet Inception distance",
    "kid": "kernel Inception distance (100 subsets of <= 1000)",
    "is": "Inception score, 10 splits (no real images)",
    "pr": "precision and recall with a k-NN neighbourhood (pr50k3: k = 3)",
    "dfid": "digit FID (the shipped digit classifier's features), 32x32 digits only",
    "modes": "StackedMNIST's modes covered (of 1,000), their KL from uniform and the classifier's confidence, each "
             "channel classified by the digit classifier; 3x32x32 (or 3x28x28) images, no real images",
}
INCEPTION_KINDS = {"fid", "kid", "is", "pr"}
NO_REALS = {"is", "modes"}  # the kinds that use no real images (so no _full form)
MIN_COUNT = {"fid": 2, "kid": 2, "is": 10, "pr": 4, "dfid": 2, "modes": 1}  # covariance, a pair, 10 splits, k = 3
FULL_MAX_REAL = {"fid": None, "kid": 1_000_000, "pr": 200_000, "dfid": None}  # StyleGAN2-ADA's caps for `_full`
REAL_SUBSET_SEED = 0
CACHE_ENV = "VITGAN_CACHE"
_CACHE_FORMAT = 2  # 2: the reals in the order of the seed-0 permutation; the bit-exact TF1 resize
_NAME = re.compile(r"(fid|kid|is|pr|dfid|modes)(\d+)(?:(k)(\d*))?(_full)?")


@dataclass(frozen=True)
class Metric:
    name: str  # as written: fid50k_full
    kind: str  # fid | kid | is | pr | dfid | modes
    num_gen: int  # generated images
    full: bool = False  # reals: the whole dataset (with the kind's cap), else as many as generated
    nhood: int = 3  # pr: the k of the k-NN balls

    def num_real(self, available: int) -> int:
        """How many real images this metric compares with when the dataset has `available`."""
        if self.kind in NO_REALS:
            return 0
        cap = FULL_MAX_REAL[self.kind] if self.full else self.num_gen
        return available if cap is None else min(cap, available)

    def result_names(self) -> list[str]:
        """The keys of its results, as StyleGAN2-ADA writes them (kid adds its spread over subsets; modes the count,
        then its KL and confidence)."""
        return {"fid": [self.name], "dfid": [self.name], "kid": [self.name, f"{self.name}_std"],
                "is": [f"{self.name}_mean", f"{self.name}_std"],
                "pr": [f"{self.name}_precision", f"{self.name}_recall"],
                "modes": [self.name, f"{self.name}_kl", f"{self.name}_confidence"]}[self.kind]


def parse_metrics(text: str) -> list[Metric]:
    """'fid50k_full,pr50k3_full,is50k' -> [Metric('fid50k_full', 'fid', 50000, full=True), ...]."""
    metrics = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        m = _NAME.fullmatch(name)
        if m is None or (m.group(4) and m.group(1) != "pr"):
            raise ConfigError(f"metrics: {name!r} is not <kind><count>[k][_full] with kind one of {', '.join(KINDS)} "
                              "(e.g. fid50k_full, kid50k_full, pr50k3_full, is50k, fid50k, modes26k)")
        kind, full = m.group(1), m.group(5) is not None
        if kind in NO_REALS and full:
            raise ConfigError(f"metrics: {name}: {'IS' if kind == 'is' else kind} uses no real images, so it has no "
                              f"_full form (use {name.removesuffix('_full')})")
        metric = Metric(name, kind, int(m.group(2)) * (1000 if m.group(3) else 1), full, int(m.group(4) or 3))
        if metric.num_gen < max(MIN_COUNT[kind], metric.nhood + 1):
            raise ConfigError(f"metrics: {name} needs at least {max(MIN_COUNT[kind], metric.nhood + 1)} generated "
                              "images")
        metrics.append(metric)
    if not metrics:
        raise ConfigError("metrics: no metric named (e.g. fid50k_full,kid50k_full,pr50k3_full,is50k)")
    if len({m.name for m in metrics}) != len(metrics):
        raise ConfigError(f"metrics: {text!r} names a metric twice")
    return metrics


def real_subset(available: int, count: int) -> np.ndarray:
    """Indices of the `count` reals a metric uses out of `available`: the first `count` of a seed-0 permutation
    (all of them, in that order, when count >= available), so every smaller subset is part of a larger one."""
    return np.random.default_rng(REAL_SUBSET_SEED).permutation(available)[:count]


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where reference features are kept: `path`, else $VITGAN_CACHE, else ~/.cache/vitgan."""
    return Path(path or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vitgan").expanduser()


def dataset_digest(images: torch.Tensor, index: torch.Tensor | None = None) -> str:
    """sha256 of the shape and pixels of the uint8 images `images[index]` (all: index None), the identity of a
    dataset's content; read in chunks, so a subset of a large dataset is never copied whole."""
    index = torch.arange(len(images)) if index is None else index
    digest = hashlib.sha256(repr((len(index), *images.shape[1:])).encode())
    for start in range(0, len(index), 4096):
        digest.update(images[index[start:start + 4096]].contiguous().numpy().tobytes())
    return digest.hexdigest()


class InceptionFeatures:
    """Pool features and unbiased logits of uint8 images, `batch` at a time on `device`."""

    def __init__(self, net: inception.InceptionV3, *, weights_sha256: str, batch: int = 64) -> None:
        self.net, self.batch = net, batch
        self.device = next(net.parameters()).device
        self.protocol = {"graph": "inception-2015-12-05", "weights_sha256": weights_sha256,
                         "resize": "tf1-bilinear-299-float32-positions-x-then-y", "input": "uint8 (x-128)/128",
                         "features": "pool_3"}

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


def reference_features(extract: InceptionFeatures, data: ImageData, *, count: int | None = None,
                       max_real: int | None = None, cache: Path | None = None, progress: bool = False,
                       log: Callable[[str], None] = print) -> np.ndarray:
    """Inception pool features (count, 2048) of the reals `real_subset` picks among the first `max_real` images of
    `data` (all of them: count None), in that subset's order; from the cache when there."""
    available = data.images[:max_real] if max_real else data.images
    index = torch.from_numpy(real_subset(len(available), count or len(available)))
    key = {"format": _CACHE_FORMAT, "data": dataset_digest(available, index), **extract.protocol}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    label = re.sub(r"[^A-Za-z0-9_.]+", "_", data.name)
    path = (cache or cache_dir()) / "reference" / f"{label}-{len(index)}-{name}.npy"
    if path.is_file():
        try:
            features = np.load(path, allow_pickle=False)
            if features.shape == (len(index), inception.FEATURES):
                log(f"reference features of {data.name}: {path} (cached)")
                return features
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed and replaced
    features = _features_of(extract, available, index, f"Inception features of {data.name}", progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.save(tmp, features, allow_pickle=False))
        log(f"reference features of {data.name}: computed, cached in {path}")
    except OSError as error:  # a read-only or full cache is not a reason to lose the evaluation
        log(f"reference features of {data.name}: computed; not cached ({error.strerror or error})")
    return features


def _features_of(extract: InceptionFeatures, images: torch.Tensor, index: torch.Tensor, desc: str,
                 progress: bool) -> np.ndarray:
    """Pool features of the uint8 images `images[index]`, 1000 at a time, with a progress bar."""
    feats = []
    with _progress(len(index), desc, progress) as bar:
        for start in range(0, len(index), 1000):
            feats.append(extract(images[index[start:start + 1000]])[0])
            bar.update(len(feats[-1]))
    return np.concatenate(feats)


class Evaluator:
    """Computes the given metrics against `data` for a generator (`evaluator(G)`) or for a set of generated images
    (`evaluator.score_images(uint8 images)`); built once, called per snapshot or tick.

    Inception is loaded (and the reference features computed or read from the cache) only when an Inception metric
    is asked for; `dfid` needs 1x32x32 data; `modes` needs 3x32x32 (or 3x28x28) generated images, checked as they
    arrive. `max_real` limits the dataset to its first images before any subset.
    """

    def __init__(self, metrics: list[Metric], data: ImageData, *, inception_path: str | None = None,
                 device: torch.device | str = "cpu", batch: int = 64, max_real: int | None = None,
                 cache: str | os.PathLike | None = None, progress: bool = False,
                 log: Callable[[str], None] = print, world: World | None = None, per_class: bool = False) -> None:
        self.metrics, self.batch, self.progress, self.per_class = metrics, batch, progress, per_class
        world = self.world = world or World()
        available = self.available = min(len(data), max_real or len(data))
        self.data = data
        self.num_gen = max(m.num_gen for m in metrics)
        self.num_real = {m.name: m.num_real(available) for m in metrics}  # reals per metric
        kinds = {m.kind for m in metrics}
        self.extract: InceptionFeatures | None = None
        self.real: np.ndarray | None = None  # the reals' features in real_subset order: a metric uses the first ones
        self._real_stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if kinds & INCEPTION_KINDS:
            weights = inception.weights_path(inception_path)
            net = inception.load_inception(weights, device=device)
            self.extract = InceptionFeatures(net, weights_sha256=inception.sha256_file(weights), batch=batch)
            if kinds & {"fid", "kid", "pr"}:
                count = max(self.num_real[m.name] for m in metrics if m.kind in ("fid", "kid", "pr"))
                if not world.is_main:
                    barrier(world)  # rank 0 computes the reference features and caches them; the others read them
                self.real = reference_features(self.extract, data, count=count, max_real=max_real,
                                               cache=cache_dir(cache), progress=progress, log=log)
                if world.is_main:
                    barrier(world)
        self.digits: dict[int, object] = {}  # reals -> DigitFID against that many
        if "dfid" in kinds:
            if tuple(data.images.shape[1:]) != (1, 32, 32):
                shape = "x".join(map(str, data.images.shape[1:]))
                raise ConfigError(f"metrics: dfid needs 1x32x32 digits, the data's images are {shape}")
            from vitgan.metrics.digits import DigitFID, load_classifier

            net = load_classifier()
            for n in {self.num_real[m.name] for m in metrics if m.kind == "dfid"}:
                reals = data.batch(torch.from_numpy(real_subset(available, n)))
                self.digits[n] = DigitFID(reals, net)
        self.modes: ModeCounter | None = ModeCounter() if "modes" in kinds else None

    def _fid(self, fake: np.ndarray, num_real: int) -> float:
        if num_real not in self._real_stats:
            self._real_stats[num_real] = feature_statistics(self.real[:num_real])
        return frechet_distance(*feature_statistics(fake), *self._real_stats[num_real])

    def labels_for(self, generator: nn.Module) -> torch.Tensor | None:
        """The class labels of a conditional generator's samples (seed i gets label i of `label_draws` of the
        data's labels, so their classes follow the data's); None for an unconditional one."""
        classes = getattr(generator, "cond", 0)
        if not classes:
            return None
        labels = self.data.labels[:self.available]
        if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= classes:
            raise ConfigError(f"data: the generator is conditional on {classes} classes; {self.data.name} must label "
                              f"every image with a class in 0-{classes - 1} to draw its samples' classes from")
        return label_draws(labels, self.num_gen)

    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> dict[str, float]:
        """The results (see `Metric.result_names`) of the generator in eval mode, on latent seeds 0..N-1; for a
        conditional generator, with labels as the data's (`labels_for`), and the class agreement of dfid and modes
        (`<name>_agreement`, `<name>_agreement_worst`, `<name>_worst_class`, `<name>_worst_drawn_as`; with
        `per_class`, dfid's per digit as well: `<name>_agreement_by_class`)."""
        device = next(generator.parameters()).device
        world, step = self.world, self.batch * self.world.size
        labels = self.labels_for(generator)
        chunks: dict[int, tuple] = {}  # first seed -> (features, logits, digit images) of this rank's chunks
        with _progress(self.num_gen, "generating and measuring", self.progress and world.is_main) as bar:
            for start in range(world.rank * self.batch, self.num_gen, step):  # the ranks take turns, chunk by chunk
                end = min(start + self.batch, self.num_gen)
                z = latents(range(start, end), generator.z_dim).to(device)
                c = () if labels is None else (labels[start:end].to(device),)
                images = quantize(generator(z, *c).float()).cpu()  # (B, C, H, W) uint8, as saved images would be
                chunks[start] = self._measure(images)
                bar.update(len(images) * world.size)
        for other in gather(chunks, world):  # every rank ends with every chunk, in seed order
            chunks.update(other)
        return self._results([chunks[start] for start in sorted(chunks)],
                             None if labels is None else labels.numpy())

    @torch.no_grad()
    def score_images(self, images: torch.Tensor) -> dict[str, float]:
        """The results for generated images (N, C, H, W) uint8, N >= the largest count: the first ones are used."""
        if len(images) < self.num_gen:
            raise ConfigError(f"metrics: {len(images)} generated images given, "
                              f"{max(self.metrics, key=lambda m: m.num_gen).name} needs {self.num_gen}")
        chunks = []
        with _progress(self.num_gen, "measuring", self.progress) as bar:
            for start in range(0, self.num_gen, self.batch):
                part = images[start:min(start + self.batch, self.num_gen)]
                chunks.append(self._measure(part))
                bar.update(len(part))
        return self._results(chunks)

    def real_modes(self) -> dict[str, float]:
        """The modes metrics' measures of as many real images as each generates (the first of `real_subset`; all of
        them when the data holds fewer), the ceiling of a generator of the data: `<name>_real`, `<name>_real_kl`,
        `<name>_real_confidence`; {} without a modes metric or when the data is not 3x32x32 (or 3x28x28)."""
        if self.modes is None or tuple(self.data.images.shape[1:]) not in ((3, 32, 32), (3, 28, 28)):
            return {}
        results: dict[str, float] = {}
        for m in self.metrics:
            if m.kind == "modes":
                index = torch.from_numpy(real_subset(self.available, m.num_gen))
                scores = self.modes(self.data.images[:self.available][index])
                results.update({f"{m.name}_real": scores["modes"], f"{m.name}_real_kl": scores["kl"],
                                f"{m.name}_real_confidence": scores["confidence"]})
        return results

    def _measure(self, images: torch.Tensor) -> tuple:
        """(pool features, logits, digit images in [-1, 1], the channels' class probabilities (`modes`)) of one
        chunk of uint8 images (None where unused)."""
        # One memory layout whatever made the images: with one channel, a generator's output and a decoded dataset
        # can both be "contiguous" with different strides, and convolutions choose their algorithm (and round-off)
        # by the strides.
        images = torch.empty_like(images, memory_format=torch.contiguous_format).copy_(images)
        pool, logit = self.extract(images) if self.extract is not None else (None, None)
        digits = images.float() / 127.5 - 1 if self.digits else None
        probs = self.modes.probabilities(images) if self.modes is not None else None
        return pool, logit, digits, probs

    def real_agreement(self) -> dict[str, float]:
        """The class agreement of the dfid metrics' real images (as many as each compares with, the first of
        `real_subset`) with their own labels, under the same classifier: the ceiling of a conditional generator's
        `<name>_agreement`, as `<name>_real_agreement`; {} without dfid or without labels."""
        labels = self.data.labels[:self.available]
        if not self.digits or len(labels) == 0 or int(labels.min()) < 0:
            return {}
        results: dict[str, float] = {}
        for m in self.metrics:
            if m.kind == "dfid":
                index = torch.from_numpy(real_subset(self.available, self.num_real[m.name]))
                probs = classify(self.digits[self.num_real[m.name]].net, self.data.images[:self.available][index])[1]
                results[f"{m.name}_real_agreement"] = class_agreement(probs.argmax(axis=1),
                                                                      labels[index].numpy())["agreement"]
        return results

    def _results(self, chunks: list[tuple], labels: np.ndarray | None = None) -> dict[str, float]:
        fake = np.concatenate([c[0] for c in chunks]) if self.extract is not None else None
        fake_logits = np.concatenate([c[1] for c in chunks]) if self.extract is not None else None
        digits = torch.cat([c[2] for c in chunks]) if self.digits else None
        mode_probs = np.concatenate([c[3] for c in chunks]) if self.modes is not None else None
        results: dict[str, float] = {}
        for m in self.metrics:
            n, r = m.num_gen, self.num_real[m.name]
            keys = m.result_names()
            if m.kind == "fid":
                values = [self._fid(fake[:n], r)]
            elif m.kind == "kid":
                values = kernel_inception_distance(self.real[:r], fake[:n])
            elif m.kind == "is":
                values = inception_score(fake_logits[:n])
            elif m.kind == "pr":
                values = precision_recall(self.real[:r], fake[:n], k=m.nhood)
            elif m.kind == "modes":
                scores = mode_measures(mode_probs[:n])
                values = [scores["modes"], scores["kl"], scores["confidence"]]
                predicted = mode_of(mode_probs[:n])
            else:  # dfid
                feats, probs = classify(self.digits[r].net, digits[:n])
                values = [self.digits[r].score(feats, probs)["digit_fid"]]
                predicted = probs.argmax(axis=1)
            results.update(zip(keys, values, strict=True))
            if labels is not None and m.kind in ("dfid", "modes"):  # do samples keep the class they were drawn for?
                agreement = class_agreement(predicted, labels[:n])
                results.update({f"{m.name}_{key}": value for key, value in agreement.items()})
                if self.per_class and m.kind == "dfid":
                    by_class = agreement_by_class(predicted, labels[:n])
                    results[f"{m.name}_agreement_by_class"] = {str(k): v for k, v in by_class.items()}
        return results

