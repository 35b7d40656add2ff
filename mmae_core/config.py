"""Configs as dataclasses: every run is described by one of these, and every one carries a seed."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from mmae_core.errors import ConfigError

DEFAULT_K_GRID: tuple[int, ...] = (30, 40, 42, 50, 60)


@dataclass(frozen=True)
class TrainConfig:
    """MMAE training settings. The defaults are the paper preset: the method exactly as published."""

    preset: str = "paper"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 42
    latent: int = 128
    hidden: tuple[int, ...] = (128, 128)
    modality_dropout: float = 0.0  # probability that an item loses a random proper subset of modalities
    align_weight: float = 0.0  # lambda on sum_m ||z_m - z||^2
    contrastive_weight: float = 0.0  # weight of the symmetric InfoNCE between modality latents of an item
    temperature: float = 0.1  # InfoNCE temperature (cosine similarities are divided by it)
    cross_weight: float = 0.0  # weight of cross-reconstruction (each modality from the others' fusion)
    fusion: str = "mean"  # mean (the paper's) | reliability (a learned weight per modality)
    input_noise: float = 0.0  # std of Gaussian noise on the standardized encoder inputs in training (denoising)
    # A view of fewer features than this gets input_noise * width / noise_full_width: an encoder averages
    # the noise over a view's features, and a narrow one has few. Measured (benchmarks/ablation.py, std
    # 1.0, 100 epochs, 3 seeds, docs/results.md): with the full std on every view, tag-space class P@10
    # fell .060 (mfeat-morphology) and .077 (mfeat-all) below the supervised search on the worst pair
    # of these two sets with the six-feature morphology view; at 32 .019 and .037, ARI level. 32 quiets
    # no other view of the real sets (the narrowest has 47 features) or of the demo (96); 64 and 128
    # also quieted the 47-feature zernike view and cost mfeat-karhunen .029 and .046 spectral ARI.
    noise_full_width: int = 32
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay; 0 = the paper's plain Adam
    early_stopping: int = 0  # patience in epochs on a validation part of train; 0 = off
    epochs_by_size: bool = False  # when no epochs are asked, fewer of them on a small train split (sized_epochs)
    val_fraction: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | mps

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}  # older files' extra fields (e.g. "parallel") are ignored
        if "hidden" in kw:
            kw["hidden"] = tuple(int(h) for h in kw["hidden"])
        return cls(**kw)

    def __post_init__(self) -> None:
        """A config is checked once, when it is made (or ``replace``d): none can exist invalid."""
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1 (got {self.epochs}).")
        if self.batch_size < 2:
            raise ConfigError(f"batch size must be at least 2 for batch normalization (got {self.batch_size}).")
        if not (0 < self.lr < 10):
            raise ConfigError(f"learning rate must be positive and small (got {self.lr}).")
        if self.latent < 2:
            raise ConfigError(f"latent size must be at least 2 (got {self.latent}).")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError("hidden sizes must be positive integers.")
        if not (0.0 <= self.modality_dropout < 1.0):
            raise ConfigError(f"modality dropout must be in [0, 1) (got {self.modality_dropout}).")
        if self.align_weight < 0:
            raise ConfigError(f"alignment weight must be non-negative (got {self.align_weight}).")
        if self.contrastive_weight < 0:
            raise ConfigError(f"contrastive weight must be non-negative (got {self.contrastive_weight}).")
        if not (0.0 < self.temperature <= 10.0):
            raise ConfigError(f"temperature must be in (0, 10] (got {self.temperature}); 0.1 is usual.")
        if self.cross_weight < 0:
            raise ConfigError(f"cross-reconstruction weight must be non-negative (got {self.cross_weight}).")
        if not (0.0 <= self.input_noise < 10.0):
            raise ConfigError(f"input noise must be in [0, 10) standard deviations (got {self.input_noise}); 0 is off.")
        if self.noise_full_width < 1:
            raise ConfigError(f"noise full width must be at least 1 feature (got {self.noise_full_width}).")
        if self.fusion not in ("mean", "reliability"):
            raise ConfigError(f"fusion must be mean or reliability (got '{self.fusion}').")
        if not (0.0 <= self.weight_decay < 10.0):
            raise ConfigError(f"weight decay must be in [0, 10) (got {self.weight_decay}).")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"device must be auto, cpu, cuda or mps (got '{self.device}').")

    def checked(self) -> "TrainConfig":
        """The config itself: it was checked when it was made (kept for callers that ask)."""
        return self


PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    # Cross-modal training (Ngiam et al. 2011) plus latent alignment. Chosen by benchmarks/tune_aligned.py
    # (docs/results.md, "Cross-modal search"): of dropout {0.3, 0.5, 0.7} x align {0, 0.1, 1, 3}, dropout 0.7 with a
    # light alignment weight 0.1 gave the highest worst-pair class P@10 on the digits and on the small demo;
    # weights of 1 and 3 pulled the latents together at the cost of class structure. Weight decay 0.3
    # (AdamW) was added after a second sweep (--weight-decay): on the full demo it keeps the weak
    # modalities' encoders from memorizing their noise (worst-pair P@10 .19 -> .27), on the digits it
    # costs about .01.
    # benchmarks/align_sweep.py (shared search space, several seeds): λ = 0 clusters the digits'
    # fused latents better at k above the class count but drops the demo's worst pair from .45 to .42; kept.
    "aligned": TrainConfig(preset="aligned", modality_dropout=0.7, align_weight=0.1, weight_decay=0.3),
    # Reconstruction + cross-modal training (modality dropout 0.7, AdamW 0.3: the aligned preset without
    # its alignment term) + a learned reliability weight per modality in the fusion. Chosen by
    # benchmarks/ablation.py (mfeat seeds 1-4, mfeat-all seeds 3-4, 20 epochs, paired 95% intervals to
    # dropout alone): reliability fusion raised spectral ARI at the class count on mfeat (.860 -> .877
    # seeds 1-2; .833 -> .869 seeds 3-4) and on mfeat-all (.904 -> .910), within the interval at these
    # few seeds. Not kept: InfoNCE (weight 1, T 0.1: spectral ARI .860 -> .755 on mfeat; weight 0.1,
    # T 0.5: -.05 on mfeat, +.01 on mfeat-all) and cross-reconstruction (weight 1: .860 -> .764): both
    # pull the modality latents together at the cost of class structure, as the alignment term did.
    # The larger gain is the graph clustering (``propose`` defaults to it): the same paper latents
    # cut by spectral clustering instead of KMeans went from ARI .72 to .85 on mfeat.
    # Its epochs are sized to the train split (``sized_epochs``): at 100 epochs it lost up to .12 ARI
    # on the 1,500-item digit sets against 20.
    "reliability": TrainConfig(preset="reliability", modality_dropout=0.7, weight_decay=0.3, fusion="reliability",
                               epochs_by_size=True),
    # The reliability preset trained as a denoising autoencoder (Vincent et al. 2008): the encoders see
    # each standardized input plus Gaussian noise of std 1.0 (less on a view narrower than
    # noise_full_width), the decoders are scored on the clean input, for the preset's 100 epochs at any
    # size. Why: the views are z-scored, so near-empty features (the tail of mfeat-karhunen's 64
    # Karhunen-Loeve coefficients) weigh as much as strong ones, and without noise the encoders spent
    # their capacity reconstructing them and overfit the 1,500-item digit sets after 20 epochs (the
    # reliability preset's sized epochs). benchmarks/compare_methods.py (docs/results.md): against std
    # 0.6 at 20 epochs (10 seeds), spectral ARI at the class count rose on mfeat (.867 -> .886) and
    # mfeat-profile (.863 -> .887), and on the demo (ablation.py, 5 seeds: .747 -> .867); at 20 seeds
    # the default is ahead of the spectral baseline beyond the interval on all five digit sets, by
    # least on mfeat-karhunen (+.010).
    "denoising": TrainConfig(preset="denoising", modality_dropout=0.7, weight_decay=0.3, fusion="reliability",
                             input_noise=1.0),
}
# What --input-noise and the Train page's "Input noise" say (one text for both).
INPUT_NOISE_HELP = ("std of the Gaussian noise added to the standardized inputs the encoders see in training, "
                    f"proportionally less on a view of fewer than {TrainConfig().noise_full_width} features; "
                    "reconstructions are scored on the clean inputs")
# What ``train`` and ``propose`` use when no preset is named (the paper's is ``--preset paper``).
DEFAULT_PRESET = "denoising"


# Epochs of a preset with ``epochs_by_size`` on a small train split: one per this many items, at least
# ``MIN_SIZED_EPOCHS``, at most the preset's. Measured (benchmarks/compare_methods.py at --epochs 20
# and 100, 10 seeds; docs/results.md "Epochs"): on the five real digit sets (1,500 train items) 100
# epochs cost the reliability preset's spectral ARI .007-.116 against 20 (mfeat .868 -> .759). The
# synthetic demo disagrees: scaled to 1,450 train items it gained from 100 epochs, and at 6,300 items
# 100 are clearly best (benchmarks/epochs.py). The rule follows the real sets where they exist (small
# splits) and keeps the preset's 100 from 7,500 items up, where the demo wants them.
ITEMS_PER_SIZED_EPOCH = 75
MIN_SIZED_EPOCHS = 20


def sized_epochs(cfg: TrainConfig, n_train: int) -> int:
    """The epochs to train ``cfg`` for on ``n_train`` items when the user asked for none."""
    if not cfg.epochs_by_size:
        return cfg.epochs
    return int(min(cfg.epochs, max(MIN_SIZED_EPOCHS, round(n_train / ITEMS_PER_SIZED_EPOCH))))


def preset(name: str, **overrides: object) -> TrainConfig:
    """The named preset with any non-None overrides applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}.")
    kw = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **kw)


@dataclass(frozen=True)
class EvalConfig:
    """Baselines and metrics over a k grid."""

    k_grid: tuple[int | str, ...] = DEFAULT_K_GRID  # a k may be "auto": found by the clustering
    split: str = "test"
    seed: int = 42
    n_init: int = 4
    fused_weights: dict[str, float] = field(default_factory=dict)  # modality -> weight; default 1.0
    unimodal_dims: dict[str, int] = field(default_factory=lambda: {"image": 50, "audio": 256, "text": 256})
    default_unimodal_dim: int = 256
    fused_dim: int = 50
    mcca_dim: int = 50
    mcca_reg: float = 0.1

    def checked(self, n_items: int) -> "EvalConfig":
        if self.n_init < 1:
            raise ConfigError(f"the number of KMeans starts must be at least 1 (got {self.n_init}); the default is {EvalConfig.n_init}.")
        if not self.k_grid:
            raise ConfigError("the k grid is empty; give at least one k, e.g. --k 30,40,50.")
        for k in self.k_grid:
            if k == "auto":  # found by the method; its own checks refuse one cluster or more than the items
                continue
            if k < 2:
                raise ConfigError(f"k must be at least 2 (got {k}).")
            if k > n_items:
                raise ConfigError(
                    f"k={k} is larger than the {n_items} items of the {self.split} split; choose k of at most {n_items}."
                )
        return self
