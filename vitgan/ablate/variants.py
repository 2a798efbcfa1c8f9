"""The variant catalogue of `vitgan ablate`: the `Variant` record, the paper's ablations and the recipe sweep (the
groups), and `select`, which picks a group's variants by name (the reference always first). A group's variant names
are unique: a duplicate is refused when the group is defined."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitgan import presets
from vitgan.config import ConfigError


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, str] = field(default_factory=dict)  # Config fields, as command-line values
    claim: str = "worse"  # against the reference: "worse" or "better" (the paper's claim), or "compare" (none)
    why: str = ""


def unique(group: str, variants: list[Variant]) -> list[Variant]:
    """`variants` as given, after checking that no two share a name (each names its run folders and records)."""
    names = [v.name for v in variants]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"ablate: the {group} group defines {', '.join(twice)} more than once; variant names must "
                         "be unique (each names its run folders and records)")
    return variants


PAPER = unique("paper", [
    Variant("vitgan", {}, "reference", "L2 attention, ISN, overlapping patches; SLN design C, INR head"),
    Variant("vanilla", {"d_attention": "dot", "d_norm": "none", "d_overlap": "false"}, "worse",
            "a vanilla ViT discriminator trains unstably or collapses"),
    Variant("no-l2", {"d_attention": "dot"}, "worse", "dot-product attention is not Lipschitz; D is less stable"),
    Variant("no-isn", {"d_norm": "none"}, "worse", "without (improved) spectral normalisation D is less stable"),
    Variant("no-overlap", {"d_overlap": "false"}, "worse", "non-overlapping patches give a worse FID"),
    Variant("g-design-a", {"g_design": "A"}, "worse", "G design A (w added to every token) trails SLN"),
    Variant("g-design-b", {"g_design": "B"}, "worse", "G design B (w as a prepended token) trails SLN"),
    Variant("linear-head", {"g_head": "linear"}, "worse", "a linear patch head instead of the INR is worse"),
    Variant("cnn-d", {"d_arch": "cnn"}, "better", "ViTGAN G with a CNN (StyleGAN2) D reaches a better FID"),
])

# The authors' PyTorch code's objective (SPEC.md), the paper presets' own: on the mnist preset a variant.
AUTHORS = {key: str(value) for key, value in presets.AUTHORS_OBJECTIVE.items()}

# The paper's training recipe (SPEC.md) on any preset's networks: what the presets' own recipes replaced.
PAPER_RECIPE = {"bcr_real": "10", "bcr_fake": "10", "bcr_mode": "shift", "r1_gamma": "0", "lr_warmup_kimg": "0",
                "augment": "color,translation,cutout,scale", "g_output": "tanh", "g_sln_equalized": "false",
                "d_head": "linear", "d_mbstd": "false", "g_lr": "2e-3", "d_lr": "2e-3"}

RECIPES = unique("recipe", [
    Variant("preset", {}, "reference", "the preset's own recipe"),
    Variant("before", {"g_sln_equalized": "false", "d_head": "linear"}, "compare",
            "the mnist preset before 2026-11-26: plain SLN layers and a linear D head"),
    Variant("paper-bcr10", {"bcr_real": "10", "bcr_fake": "10", "r1_gamma": "0"}, "compare",
            "the paper's bCR 10 (T a shift of up to 1/8), no R1"),
    Variant("paper", PAPER_RECIPE, "compare",
            "the paper's recipe whole: bCR 10, no R1, tanh output, plain SLN, linear D head, no minibatch std, "
            "lr 0.002"),
    Variant("authors", AUTHORS, "compare", "the authors' code: bCR 1 diffaug, R1 0.1 every step, warm-up, cutout 0.3"),
    Variant("sigma-reparam", {"d_norm": "sigma_reparam"}, "compare", "ISN with a learned gain per layer"),
    Variant("g-lr-half", {"g_lr": "2.5e-4"}, "compare", "G learns at half D's rate (two time-scale update rule)"),
    Variant("g-lr-2x", {"g_lr": "1e-3"}, "compare", "G learns at twice D's rate (1e-3 against 5e-4)"),
    Variant("d-steps-2", {"d_steps_per_g": "2"}, "compare", "two D steps, each on its own reals, per G step"),
    Variant("grad-clip-1", {"grad_clip": "1"}, "compare", "both networks' gradients clipped to norm 1 (D's is 2-5)"),
    Variant("lr-2x", {"g_lr": "1e-3", "d_lr": "1e-3"}, "compare",
            "both learning rates doubled (the authors' code: 1e-3 at batch 64, 2e-3 at batch 32)"),
    Variant("paper-lr", {"g_lr": "2e-3", "d_lr": "2e-3"}, "compare", "the paper's learning rate 0.002 (at batch 128)"),
    Variant("qk-norm", {"d_qk_norm": "true"}, "compare", "a LayerNorm on D's per-head queries and keys (QK-norm)"),
    Variant("no-augment", {"augment": ""}, "compare", "no DiffAugment: D sees every image as it is"),
    Variant("augment-shift", {"augment": "translation", "augment_fill": "edge"}, "compare",
            "DiffAugment's translation alone, filled from the edge (on digits: black, as the background)"),
    Variant("mbstd-16", {"d_mbstd_group": "16"}, "compare",
            "the minibatch std over all 16 samples of a batch instead of groups of 4 (a wider diversity signal)"),
    Variant("pack-2", {"d_pack": "2"}, "compare",
            "PacGAN: D judges pairs of images stacked along channels, one logit per pair (against dropped modes)"),
    Variant("d-wide", {"d_dim": "256", "d_mlp_dim": "512"}, "compare",
            "a wider ViT D (tokens 256 wide, MLP 512: about 4x the weights), as the CNN D that does better is larger"),
    Variant("g-wide", {"g_dim": "256", "g_mlp_dim": "512"}, "compare",
            "a wider G (tokens 256 wide, MLP 512): do more weights make legible digits from fewer images?"),
    Variant("r1-0.1", {"r1_gamma": "0.1"}, "compare", "R1 at a tenth of the preset's weight (the authors' gamma)"),
    Variant("preset-rerun", {}, "compare",
            "the preset itself again, on the code of 2026-11-27 (fused Adam, compiled R1, one D forward per step, "
            "consecutive minibatch-std groups): how far the same recipe moves"),
    Variant("ema-long", {"ema_kimg": "10", "ema_rampup": "0.2"}, "compare",
            "a longer EMA (half-life 10 kimg, at most a fifth of the images seen): G itself trains as the preset's"),
    Variant("batch-8", {"batch": "8"}, "compare",
            "batch 8 at the same learning rate: twice the optimiser steps per image (batch 32 did worse at 20 kimg)"),
    Variant("batch-4", {"batch": "4"}, "compare",
            "batch 4 (one minibatch-std group) at the same learning rate: four times the optimiser steps per image"),
    Variant("ada", {"ada_target": "0.6", "augment_p": "0"}, "compare",
            "adaptive augmentation (ADA): p starts at 0 and rises only while D's sign on reals exceeds 0.6"),
])

# The relativistic objective of R3GAN (Huang et al. 2024): RpGAN with R1 and R2 of one gamma, lazy as R1 is.
def rpgan(gamma: str) -> dict[str, str]:
    return {"gan_loss": "rpgan", "r1_gamma": gamma, "r2_gamma": gamma}


VANILLA = PAPER[1].overrides  # the paper's vanilla ViT discriminator
# The mnist preset's objective and augmentation (non-saturating loss, R1, DiffAugment's colour op with saturation):
# the stacked-mnist preset's until 2026-12-07. The variants measured before then spell out what of it they kept, so
# that their records still say what ran; their names end in -saturation.
_MNIST, _STACKED = presets.get("mnist"), presets.get("stacked-mnist")
MNIST_OBJECTIVE = {key: str(getattr(_MNIST, key)) for key in presets.STACKED_MNIST_OBJECTIVE
                   if getattr(_MNIST, key) != getattr(_STACKED, key)}
SATURATION = {"augment": MNIST_OBJECTIVE["augment"]}
NS_R1 = {key: MNIST_OBJECTIVE[key] for key in ("gan_loss", "r2_gamma")}

# StackedMNIST's 1,000 modes (issue 27): the stacked-mnist preset (RpGAN + R1 + R2, no saturation) against the
# objective and augmentation it replaced, the paper's vanilla ViT D and the CNN D, scored by modes and KL.
STACKED = unique("stacked", [
    Variant("vitgan", {}, "reference",
            "the stacked-mnist preset: ViT G + ViT D, RpGAN + R1 + R2 (gamma 1), DiffAugment without saturation"),
    Variant("ns-saturation", MNIST_OBJECTIVE, "compare", "the stacked-mnist preset before 2026-12-07: the mnist "
            "preset's objective (non-saturating loss, R1) and augmentation (with saturation)"),
    Variant("ns", NS_R1, "compare", "the non-saturating loss with R1 alone"),
    Variant("ns-r2", {"gan_loss": NS_R1["gan_loss"]}, "compare",
            "the non-saturating loss with R1 and R2 (R3GAN's 'GAN + R1 + R2')"),
    Variant("saturation", SATURATION, "compare", "the preset with saturation back in DiffAugment's colour op"),
    Variant("vanilla", VANILLA, "worse", "a vanilla ViT discriminator trains unstably or drops modes"),
    Variant("cnn-d", {"d_arch": "cnn"}, "compare", "the ViTGAN G with a CNN (StyleGAN2) D"),
    # against the collapse after 100 kimg (benchmarks/stacked-240.md): D's logit gap holds while G's variation falls
    Variant("g10", rpgan("10"), "compare", "RpGAN + R1 + R2 at gamma 10: stronger zero-centred penalties"),
    Variant("d-lr-half", {"d_lr": str(_STACKED.d_lr / 2)}, "compare", "D's learning rate halved (G's kept)"),
    # before 2026-12-07, on the mnist preset's objective and augmentation
    Variant("vanilla-ns-saturation", {**MNIST_OBJECTIVE, **VANILLA}, "compare",
            "the paper's vanilla ViT D under the mnist preset's objective and augmentation"),
    Variant("cnn-d-ns-saturation", {**MNIST_OBJECTIVE, "d_arch": "cnn"}, "compare",
            "the CNN D under the mnist preset's objective and augmentation"),
    # the screen of RpGAN's gamma, with saturation
    Variant("g0.1-saturation", {**SATURATION, "r1_gamma": "0.1", "r2_gamma": "0.1"}, "compare",
            "the gamma screen: RpGAN + R1 + R2 at gamma 0.1, with saturation"),
    Variant("g10-saturation", {**SATURATION, "r1_gamma": "10", "r2_gamma": "10"}, "compare",
            "the gamma screen: RpGAN + R1 + R2 at gamma 10, with saturation"),
    # Does ISN, which holds each layer's largest singular value at its initial one (2.0 against the free CNN D's
    # 6.2), keep the ViT D from telling the modes apart? (RpGAN + R1 + R2, with saturation)
    Variant("sigma-reparam-saturation", {**SATURATION, "d_norm": "sigma_reparam"}, "compare",
            "ISN with a learned gain per layer (the ViT D may grow its scale), with saturation"),
    Variant("no-isn-saturation", {**SATURATION, "d_norm": "none"}, "compare",
            "the ViTGAN D without ISN (L2 attention and overlap kept; R1, R2 hold it), with saturation"),
])

RECIPES.append(Variant("rpgan", rpgan("1"), "compare",
                       "RpGAN + R1 + R2 (R3GAN's objective), gamma 1 for both, lazy as the preset's R1"))

# Overrides that are `vitgan train` switches rather than Config values: "true" gives the switch (--cond: the Config's
# cond from the data's class count)
RUN_SWITCHES = {"cond"}

RECIPES.append(Variant("cond", {"cond": "true"}, "compare",
                       "class-conditional (--cond): the label embedded beside z in G's mapping, a projection D"))
# The screen of issue 28 (class agreement at 50 kimg): the conditional model with the relativistic objective
RECIPES.append(Variant("cond-rpgan", {"cond": "true", **rpgan("1")}, "compare",
                       "class-conditional with RpGAN + R1 + R2 (gamma 1): the pairing against dropped classes"))
RECIPES.append(Variant("cond-hidden", {"cond": "true", "d_projection": "hidden"}, "compare",
                       "class-conditional, the projection on the MLP head's hidden layer (Miyato's phi(x))"))
RECIPES.append(Variant("cond-centered", {"cond": "true", "d_projection": "centered"}, "compare",
                       "class-conditional, the projection's embedding relative to its mean over classes"))
RECIPES.append(Variant("cond-gain4", {"cond": "true", "d_projection_gain": "4"}, "compare",
                       "class-conditional, the projection term times 4"))
RECIPES.append(Variant("cond-b8", {"cond": "true", "batch": "8"}, "compare",
                       "class-conditional at batch 8: twice the optimiser steps per image"))
RECIPES.append(Variant("cond-b8-centered", {"cond": "true", "batch": "8", "d_projection": "centered"}, "compare",
                       "class-conditional at batch 8 with the class-centred projection"))
RECIPES.append(Variant("cond-cnn-d", {"cond": "true", "d_arch": "cnn"}, "compare",
                       "class-conditional with the CNN D (projection on its pooled feature): is the ViT D the limit?"))
RECIPES.append(Variant("cond-b8-rpgan", {"cond": "true", "batch": "8", **rpgan("1")}, "compare",
                       "class-conditional at batch 8 with RpGAN + R1 + R2 (gamma 1)"))

# G's mapping MLP learns at lr x 0.01 (StyleGAN2-ADA's multiplier, the preset's): over 50 kimg it barely moves, so
# the label reaches w through a nearly fixed random MLP, only the label embedding learning
RECIPES.append(Variant("cond-b8-map1", {"cond": "true", "batch": "8", "mapping_lr_mul": "1"}, "compare",
                       "class-conditional at batch 8 with G's mapping MLP at the full learning rate (lr x 1)"))
RECIPES.append(Variant("cond-map1", {"cond": "true", "mapping_lr_mul": "1"}, "compare",
                       "class-conditional with G's mapping MLP at the full learning rate (lr x 1)"))
# The ViT D learns the classes slowly (agreement still rising at 50 kimg; the CNN D's is 0.93 by 25 kimg): the label
# also at D's input, in its class token, so that attention can look for the class
RECIPES.append(Variant("cond-b8-token", {"cond": "true", "batch": "8", "d_cond_token": "true"}, "compare",
                       "class-conditional at batch 8 with the class also embedded in the ViT D's class token"))
RECIPES.append(Variant("cond-map1-token", {"cond": "true", "mapping_lr_mul": "1", "d_cond_token": "true"}, "compare",
                       "class-conditional with the mapping MLP at lr x 1 and the class in the ViT D's class token"))
GROUPS = {"paper": PAPER, "recipe": unique("recipe", RECIPES), "stacked": STACKED}


@dataclass(frozen=True)
class GroupDefaults:
    """What a group's sweep trains on and where it writes, unless the command line says otherwise."""

    title: str
    outdir: str
    report: str
    preset: str = "mnist"
    data: str = "mnist"
    samples: int = 5000  # for each final measurement


DEFAULTS = {
    "paper": GroupDefaults("Ablation", "runs/ablation", "docs/ablation.md"),
    "recipe": GroupDefaults("Recipe sweep", "runs/recipe", "benchmarks/recipe.md"),
    "stacked": GroupDefaults("StackedMNIST: modes by objective and discriminator", "runs/stacked",
                             "benchmarks/stacked.md", preset="stacked-mnist", data="stacked-mnist", samples=26000),
}


def select(names: str | None, group: str = "paper") -> list[Variant]:
    """The variants of `group` named in the comma-separated `names` (all of them without), in the order given, the
    group's reference (its first variant) put first if it was not named."""
    if group not in GROUPS:
        raise ConfigError(f"group: {group!r} is not one of {', '.join(GROUPS)}")
    variants = unique(group, GROUPS[group])
    if not names:
        return variants
    by_name = {v.name: v for v in variants}
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in by_name]
    if unknown or not chosen:
        raise ConfigError(f"variants: {', '.join(unknown or [names])} not among {', '.join(by_name)}")
    reference = variants[0].name
    if reference not in chosen:
        chosen.insert(0, reference)  # the reference every other variant is compared with
    return [by_name[n] for n in chosen]
