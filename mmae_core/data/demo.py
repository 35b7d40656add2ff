"""The built-in synthetic demo dataset.

LUMA itself is not redistributable, so the demo imitates its *shape* (50 named classes, 420/84 items
per class in train/test, an OOD split of 3,859 items, image 50-d / audio 1024-d / text 768-d) and its
*difficulty*: unimodal PCA+KMeans lands near the paper's Table II (image ARI about 0.5, text about
0.1, audio about 0.05).

How the generator makes the modalities complementary rather than copies of one another: every
item has a point in a shared "concept" space (its class prototype plus within-class variation). Each
modality sees a different part of that space through its own noise and a fixed random nonlinear map
(a seeded two-layer tanh network), and adds nuisance factors of its own (recording conditions,
photographic style, wording) that carry no class information but plenty of variance. Image sees most
concept factors with moderate noise; text sees some factors image does not, but noisily; audio sees
a weak mixture. A model that finds what the modalities share can therefore recover more than any
single one, while fused PCA is held back by the nuisance variance it has to keep.

Measured at seed 42 (test split, k=50, ``benchmarks/calibration.py``): unimodal ARI image 0.54,
text 0.10, audio 0.05; fused PCA 0.60; the paper-preset MMAE about 0.9. Note that MCCA does as well
as the MMAE here: the classes are blobs in every modality, which a linear multiview method can line
up; the demo shows what fusion buys, not that nonlinearity is required.

Everything is drawn from ``numpy.random.Generator`` streams spawned from the seed: the "world"
(prototypes, maps, nuisance directions) from one stream and each split's items and captions from
their own, so the same seed at a smaller ``scale`` gives a smaller sample of the same world.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import ConfigError

# 50 concrete classes, each with words a caption about it would use (the first is the class noun).
# Tag naming by TF-IDF should recover the class from these; the shared scene/adjective words below
# are the distractors it must see through.
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "jet", "runway", "wings", "pilot"),
    "apple": ("apple", "orchard", "fruit", "crisp", "harvest"),
    "bear": ("bear", "fur", "forest", "paws", "cub"),
    "bee": ("bee", "hive", "honey", "buzzing", "pollen"),
    "bicycle": ("bicycle", "pedals", "handlebar", "cyclist", "spokes"),
    "bird": ("bird", "feathers", "beak", "nest", "chirping"),
    "boat": ("boat", "harbor", "sail", "deck", "waves"),
    "bottle": ("bottle", "glass", "cork", "label", "drink"),
    "bridge": ("bridge", "river", "arch", "span", "crossing"),
    "bus": ("bus", "passengers", "stop", "route", "driver"),
    "butterfly": ("butterfly", "wings", "flower", "colorful", "caterpillar"),
    "camel": ("camel", "desert", "hump", "dunes", "caravan"),
    "castle": ("castle", "tower", "medieval", "walls", "moat"),
    "cat": ("cat", "kitten", "whiskers", "purring", "paws"),
    "chair": ("chair", "seat", "wooden", "furniture", "backrest"),
    "clock": ("clock", "ticking", "hands", "alarm", "time"),
    "cloud": ("cloud", "sky", "storm", "fluffy", "weather"),
    "cow": ("cow", "farm", "milk", "pasture", "mooing"),
    "crab": ("crab", "claws", "shell", "beach", "tide"),
    "dog": ("dog", "puppy", "barking", "leash", "tail"),
    "dolphin": ("dolphin", "ocean", "fin", "splash", "pod"),
    "elephant": ("elephant", "trunk", "tusks", "savanna", "herd"),
    "fox": ("fox", "den", "bushy", "sly", "burrow"),
    "frog": ("frog", "pond", "croaking", "lily", "amphibian"),
    "guitar": ("guitar", "strings", "chords", "strumming", "acoustic"),
    "hamster": ("hamster", "cage", "wheel", "rodent", "cheeks"),
    "horse": ("horse", "saddle", "gallop", "stable", "mane"),
    "house": ("house", "roof", "door", "garden", "windows"),
    "keyboard": ("keyboard", "keys", "typing", "computer", "desk"),
    "lamp": ("lamp", "light", "bulb", "shade", "glow"),
    "lion": ("lion", "roar", "pride", "mane", "predator"),
    "motorcycle": ("motorcycle", "engine", "helmet", "rider", "exhaust"),
    "mountain": ("mountain", "peak", "snow", "summit", "hiking"),
    "mushroom": ("mushroom", "fungus", "cap", "moss", "spores"),
    "orange": ("orange", "citrus", "peel", "juice", "grove"),
    "owl": ("owl", "hooting", "nocturnal", "branch", "eyes"),
    "piano": ("piano", "melody", "pianist", "recital", "pedal"),
    "rabbit": ("rabbit", "bunny", "ears", "carrot", "hopping"),
    "rocket": ("rocket", "launch", "space", "countdown", "thrust"),
    "rose": ("rose", "petals", "thorns", "bouquet", "blossom"),
    "shark": ("shark", "teeth", "reef", "predator", "underwater"),
    "snake": ("snake", "scales", "hissing", "venom", "coiled"),
    "spider": ("spider", "web", "legs", "silk", "creepy"),
    "tank": ("tank", "armor", "military", "turret", "tracks"),
    "telephone": ("telephone", "ringing", "receiver", "call", "dial"),
    "tiger": ("tiger", "stripes", "jungle", "prowling", "cub"),
    "tractor": ("tractor", "field", "plough", "farmer", "diesel"),
    "train": ("train", "railway", "station", "locomotive", "whistle"),
    "truck": ("truck", "cargo", "highway", "trailer", "delivery"),
    "violin": ("violin", "bow", "orchestra", "concert", "strings"),
}
CLASS_NAMES: tuple[str, ...] = tuple(CLASS_WORDS)

# Distractor vocabulary shared by every class: it makes captions read naturally and gives TF-IDF
# frequent words that carry no class information.
_ADJECTIVES = ("small", "large", "old", "bright", "dark", "blurry", "colorful", "quiet", "distant", "close-up")
_SCENES = (
    "on a lawn", "in the city", "at night", "in the rain", "near the water", "in a studio",
    "under a blue sky", "in the morning light", "at a market", "on a dusty road", "in the snow", "indoors",
)
_OOD_SCENES = ("through fog", "on an old film reel", "in heavy static", "under flickering light", "on a grainy monitor")
_OPENERS = ("A photo of", "A recording of", "Footage of", "A picture of", "A clip showing", "An image of")
_TITLE_FORMS = ("{Noun} {scene}", "{Adj} {noun}", "{Noun}, {w1}", "{Noun} and {w1}", "Untitled {noun} clip")

MODALITY_DIMS: dict[str, int] = {"image": 50, "audio": 1024, "text": 768}
TRAIN_PER_CLASS = 420
TEST_PER_CLASS = 84
OOD_ITEMS = 3859


@dataclass(frozen=True)
class _View:
    """How one modality sees the concept space; the numbers in ``_Recipe`` are the calibration.

    Feature variance is built from three parts with the scales below: the warped concept signal
    (``signal`` is the per-feature std of its *class means*, i.e. of what separates classes), the
    nuisance factors and the isotropic noise. KMeans on PCA of one modality finds classes only when the
    class-separating signal stands out against nuisance of comparable size, which is what makes the
    unimodal ARI sensitive to ``signal`` and ``nuisance``: change them in small steps.
    """

    factors: tuple[int, int]  # the slice of concept factors this modality sees
    mix: int  # extra random mixtures of *all* factors it also sees (0 = none)
    concept_noise: float  # per-item noise added to what it sees, before the nonlinear map
    gain: float  # input gain of the tanh layer (higher = more warped)
    hidden: int  # width of the random tanh layer
    signal: float  # per-feature std of the class means of the warped concept signal
    nuisance_rank: int  # modality-specific nuisance factors (style, recording conditions)
    nuisance: float  # their scale in the output
    noise: float  # isotropic per-feature noise


@dataclass(frozen=True)
class _Recipe:
    """The generator's settings. Image sees concept factors 0-23 with little noise; text sees 12-31
    (eight that image never sees) plus four mixtures, noisily; audio sees everything through heavy
    noise. Measured effect: see ``benchmarks/calibration.py``."""

    concept_dim: int = 32
    prototype_scale: float = 1.0
    within_class: float = 0.55
    ood_shift: float = 0.6  # OOD items: a shared shift of the concept ...
    ood_noise: float = 1.5  # ... and this factor on every noise term
    misleading_captions: float = 0.08  # fraction of captions that name another class's words
    image: _View = _View((0, 24), 0, 0.35, 1.0, 96, 0.82, 6, 0.68, 0.35)
    text: _View = _View((12, 32), 4, 0.9, 1.0, 192, 0.67, 24, 1.12, 1.6)
    audio: _View = _View((0, 32), 0, 1.6, 1.0, 192, 0.52, 24, 0.85, 2.0)


RECIPE = _Recipe()


def _counts(scale: float) -> tuple[int, int, np.ndarray]:
    """Per-class train/test counts and per-class OOD counts (OOD is deliberately uneven, as in LUMA)."""
    n_tr = max(2, int(round(TRAIN_PER_CLASS * scale)))
    n_te = max(2, int(round(TEST_PER_CLASS * scale)))
    n_ood = max(len(CLASS_NAMES), int(round(OOD_ITEMS * scale)))
    k = len(CLASS_NAMES)
    ood = np.full(k, n_ood // k)
    ood[: n_ood % k] += 1
    return n_tr, n_te, ood


def _random_map(rng: np.random.Generator, d_in: int, v: _View, d_out: int) -> tuple[np.ndarray, ...]:
    w1 = rng.standard_normal((d_in, v.hidden)) * (v.gain / np.sqrt(d_in))
    b1 = rng.standard_normal(v.hidden) * 0.3 * v.gain
    w2 = rng.standard_normal((v.hidden, d_out)) / np.sqrt(v.hidden)
    return w1.astype(np.float32), b1.astype(np.float32), w2.astype(np.float32)


def _world(rng: np.random.Generator, r: _Recipe) -> dict[str, object]:
    """Everything shared by all items of a seed: class prototypes, the modalities' maps, the OOD shift.

    The scale of each warped signal is measured once here, on a reference sample of 40 items per
    class, so that the features of an item do not depend on which split or ``scale`` it came from.
    """
    k, c = len(CLASS_NAMES), r.concept_dim
    protos = rng.standard_normal((k, c)) * r.prototype_scale
    world: dict[str, object] = {"prototypes": protos.astype(np.float32)}
    world["ood_shift"] = (rng.standard_normal(c) * r.ood_shift).astype(np.float32)
    ref_cls = np.repeat(np.arange(k), 40)
    ref = protos[ref_cls] + rng.standard_normal((len(ref_cls), c)) * r.within_class
    for m, d in MODALITY_DIMS.items():
        v: _View = getattr(r, m)
        lo, hi = v.factors
        mixing = rng.standard_normal((c, v.mix)) / np.sqrt(c)
        w1, b1, w2 = _random_map(rng, (hi - lo) + v.mix, v, d)
        nuis = (rng.standard_normal((v.nuisance_rank, d)) / np.sqrt(max(v.nuisance_rank, 1))).astype(np.float32)
        seen = np.concatenate([ref[:, lo:hi], ref @ mixing], axis=1)
        seen = seen + rng.standard_normal(seen.shape) * v.concept_noise
        # Scale the class means of the signal, not its total: what separates classes then varies less
        # from seed to seed than it would if the random map's within-class spread counted too.
        class_means = (np.tanh(seen @ w1 + b1) @ w2).reshape(k, -1, d).mean(axis=1)
        w2 = (w2 * (v.signal / max(float(class_means.std()), 1e-9))).astype(np.float32)
        world[m] = (mixing.astype(np.float32), w1, b1, w2, nuis)
    return world


def _features(
    rng: np.random.Generator, world: dict[str, object], concept: np.ndarray, r: _Recipe, noise_factor: float
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n = concept.shape[0]
    f32 = np.float32
    for m, d in MODALITY_DIMS.items():
        v: _View = getattr(r, m)
        mixing, w1, b1, w2, nuis = world[m]  # type: ignore[misc]
        lo, hi = v.factors
        seen = np.concatenate([concept[:, lo:hi], concept @ mixing], axis=1)
        seen += rng.standard_normal(seen.shape, dtype=f32) * f32(v.concept_noise * noise_factor)
        x = np.tanh(seen @ w1 + b1) @ w2
        if v.nuisance_rank:
            x += (rng.standard_normal((n, v.nuisance_rank), dtype=f32) * f32(v.nuisance)) @ nuis
        noise = rng.standard_normal((n, d), dtype=f32)
        noise *= f32(v.noise * noise_factor)
        x += noise
        out[m] = x
    return out


def _captions(
    rng: np.random.Generator, labels: np.ndarray, ood: bool, misleading: float
) -> tuple[list[str], list[str]]:
    """Titles and captions from templates; a fraction of captions talk about another class."""
    n = len(labels)
    k = len(CLASS_NAMES)
    cls = labels.copy()
    wrong = rng.random(n) < misleading
    cls[wrong] = (cls[wrong] + rng.integers(1, k, wrong.sum())) % k
    scenes = _OOD_SCENES if ood else _SCENES
    opener = rng.integers(0, len(_OPENERS), n)
    adj = rng.integers(0, len(_ADJECTIVES), n)
    scene = rng.integers(0, len(scenes), n)
    w1 = rng.integers(1, 5, n)
    w2 = rng.integers(1, 5, n)
    form = rng.integers(0, len(_TITLE_FORMS), n)
    titles: list[str] = []
    captions: list[str] = []
    for i in range(n):
        words = CLASS_WORDS[CLASS_NAMES[cls[i]]]
        own = CLASS_WORDS[CLASS_NAMES[labels[i]]]
        a, s = _ADJECTIVES[adj[i]], scenes[scene[i]]
        other = words[w2[i]] if w2[i] != w1[i] else words[1 + (w1[i] % 4)]
        article = "an" if a[0] in "aeiou" else "a"
        captions.append(f"{_OPENERS[opener[i]]} {article} {a} {words[0]} {s}, with {words[w1[i]]} and {other}.")
        # Titles are written by a (mostly careful) archivist about the real class.
        titles.append(
            _TITLE_FORMS[form[i]].format(
                Noun=own[0].capitalize(), noun=own[0], Adj=a.capitalize(), scene=s, w1=own[w1[i]]
            )
        )
    return titles, captions


def demo_world(seed: int) -> tuple[dict[str, object], list[np.random.SeedSequence]]:
    """The seed's world and the seed sequences of its train, test and ood splits, in that order."""
    world_ss, *split_ss = np.random.SeedSequence(seed).spawn(4)
    return _world(np.random.default_rng(world_ss), RECIPE), split_ss


def draw_items(
    rng: np.random.Generator, world: dict[str, object], cls: np.ndarray, ood: bool
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Features, titles and captions of items of classes ``cls`` (indices into ``CLASS_NAMES``).

    The one rule that turns a class into an item: the demo calls it once per split, and the chunked
    archive generator (``benchmarks/make_archive.py``) once per chunk, so both draw the same world.
    """
    r = RECIPE
    protos: np.ndarray = world["prototypes"]  # type: ignore[assignment]
    nf = r.ood_noise if ood else 1.0
    spread = rng.standard_normal((len(cls), r.concept_dim), dtype=np.float32) * np.float32(r.within_class * nf)
    concept = protos[cls] + spread
    if ood:
        concept = concept + world["ood_shift"]  # type: ignore[operator]
    feats = _features(rng, world, concept, r, nf)
    titles, captions = _captions(rng, cls, ood, r.misleading_captions * nf)
    return feats, titles, captions


def make_demo(name: str = "demo", seed: int = 42, scale: float = 1.0) -> FeatureSet:
    """The synthetic LUMA-shaped demo set; same ``(seed, scale)`` gives identical arrays and text.

    ``scale`` multiplies every split's size (at least 2 train and test items per class) so tests and
    quick looks can use a small version of the same world.
    """
    if not (0 < scale <= 10):
        raise ConfigError(f"the demo scale must be above 0 and at most 10 (got {scale}); use 1 for the LUMA-sized set.")
    world, split_ss = demo_world(seed)
    n_tr, n_te, ood_counts = _counts(scale)
    k = len(CLASS_NAMES)
    plan = {
        "train": np.repeat(np.arange(k), n_tr),
        "test": np.repeat(np.arange(k), n_te),
        "ood": np.repeat(np.arange(k), ood_counts),
    }
    splits: dict[str, Split] = {}
    for (sname, cls), sseq in zip(plan.items(), split_ss):
        rng = np.random.default_rng(sseq)
        cls = cls[rng.permutation(len(cls))]
        feats, titles, captions = draw_items(rng, world, cls, sname == "ood")
        ids = np.array([f"{name}-{sname}-{i:06d}" for i in range(len(cls))], dtype=object)
        labels = np.array([CLASS_NAMES[c] for c in cls], dtype=object)
        meta = pd.DataFrame({"title": titles, "caption": captions})
        splits[sname] = Split(item_ids=ids, features=feats, labels=labels, meta=meta)
    fs = FeatureSet(
        name=name,
        modalities=dict(MODALITY_DIMS),
        splits=splits,
        synthetic=True,
        source=f"synthetic demo (seed {seed}, scale {scale:g})",
        attrs={"seed": seed, "scale": scale, "generator": "mmae_core.data.demo", "classes": len(CLASS_NAMES)},
    )
    return fs.validate()
