"""The multimodal autoencoder: one encoder and one decoder per modality, fused by a mean.

One definition for every preset. The paper's objective is Σ_m MSE(x_m, D_m(z)); the options (all off by
default, so the paper preset is exactly the paper's) add what the field found for aligned data:

* ``align_weight``: Σ_m ||z_m − z||² (the aligned preset);
* ``contrastive_weight``: symmetric InfoNCE between the latents of two modalities of the same item
  (CLIP-style, cosine over ``temperature``), averaged over modality pairs;
* ``cross_weight``: cross-reconstruction, each modality decoded from the fusion of the others;
* ``fusion="reliability"``: a learned weight per modality (softmax over the ones an item has) instead
  of the plain mean;
* ``input_noise``: the encoders see the standardized inputs plus Gaussian noise of this std while
  every reconstruction is scored on the clean inputs (a denoising autoencoder); a view narrower than
  ``noise_full_width`` features gets proportionally less (``noise_std``).

Which of them pays is measured by benchmarks/ablation.py (config.py says what was kept and why).

Missing modalities are handled by *row indices*, not by masking values: encoder m only ever sees the
rows that have m (so BatchNorm statistics are never polluted by the zeros that stand in for missing
rows), the shared latent of an item is the mean of the encodings it has, and decoder m only runs on
(and is scored on) the rows that have m. ``None`` for a row index means "every row", which is the
common case and keeps the full-data path free of any gather.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

Rows = dict[str, Tensor | None]  # modality -> row indices into the batch (None = all rows)
AUX: tuple[str, ...] = ("align", "contrastive", "cross")  # the optional terms, in the order of Output.parts
FUSIONS: tuple[str, ...] = ("mean", "reliability")


def noise_std(width: int, input_noise: float, full_width: int = 1) -> float:
    """The std of the training noise on a view of ``width`` features: ``input_noise`` from
    ``full_width`` features up, proportionally less below (an encoder averages the noise over a view's
    features, and a narrow view has few to average over; config.py has the measured threshold)."""
    return input_noise * min(1.0, width / full_width)


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that tolerates a single row in training (uses running stats instead of raising).

    A batch can hold just one item with a given modality (small or patchy data, modality dropout);
    plain BatchNorm raises there. It also skips the ``num_batches_tracked`` bookkeeping, which only
    matters for momentum=None and costs an op per layer per step.
    """

    def forward(self, x: Tensor) -> Tensor:
        train = self.training and x.shape[0] > 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, train, self.momentum, self.eps)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear → BN → ReLU blocks, with a bare Linear at the end (the paper's encoder/decoder shape).

    A Linear that feeds a BatchNorm has no bias: BatchNorm subtracts the batch mean, so such a bias
    has no effect and an exactly-zero true gradient (with Adam it would only drift on rounding
    noise); BatchNorm's own shift β plays its role. Same function class, less work per step.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(a, b, bias=last))
        if not last:
            layers += [BatchNorm(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@dataclass
class Output:
    loss: Tensor  # scalar to backpropagate
    parts: Tensor  # (M + len(AUX) + 1,) detached: per-modality reconstruction MSE in model order, AUX terms, total
    z: Tensor  # (B, latent) fused latent
    zs: dict[str, Tensor]  # modality -> (rows fed to its encoder, latent)


class MMAE(nn.Module):
    def __init__(self, modalities: dict[str, int], latent: int = 128, hidden: tuple[int, ...] = (128, 128),
                 fusion: str = "mean"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)} (got '{fusion}')")
        self.modalities = dict(modalities)
        self.names = list(modalities)
        self.latent = int(latent)
        self.hidden = tuple(int(h) for h in hidden)
        self.fusion = fusion
        # ModuleList (not ModuleDict) so any modality name is allowed; order = self.names.
        self.enc = nn.ModuleList(mlp([d, *self.hidden, self.latent]) for d in modalities.values())
        self.dec = nn.ModuleList(mlp([self.latent, *reversed(self.hidden), d]) for d in modalities.values())
        # reliability fusion: one learned log-weight per modality, 0 at the start (= the plain mean);
        # created after the encoders and decoders so their seeded weights are the mean model's
        if fusion == "reliability":
            self.fusion_logit = nn.Parameter(torch.zeros(len(self.names)))

    def encode_sum(self, x: dict[str, Tensor], rows: Rows, which: list[int] | None = None) -> tuple[dict[str, Tensor], Tensor | None]:
        """Encodings of the modalities ``which`` (indices, default all) present in ``x``, and their
        row-wise sum (B, latent) — the numerator of the fused mean (None if none was encoded)."""
        hs: dict[str, Tensor] = {}
        n = next(iter(x.values())).shape[0]
        for j in range(len(self.names)) if which is None else which:
            m = self.names[j]
            r = rows.get(m)
            if m not in x or (r is not None and r.numel() == 0):
                continue
            hs[m] = self.enc[j](x[m] if r is None else x[m].index_select(0, r))
        return hs, self._sum(hs, rows, n)

    @staticmethod
    def _sum(hs: dict[str, Tensor], rows: Rows, n: int) -> Tensor | None:
        total: Tensor | None = None
        for m, h in hs.items():
            r = rows.get(m)
            if r is None:
                total = h if total is None else total + h
            else:
                total = (h.new_zeros(n, h.shape[1]) if total is None else total).index_add(0, r, h)
        return total

    def fuse(self, x: dict[str, Tensor], rows: Rows, inv_count: Tensor | float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Shared latent z = mean of the encodings an item has; also the per-modality encodings.

        ``x`` may hold any subset of the modalities; ``inv_count`` is 1 / (modalities encoded per row),
        shape (B, 1), or None when every row has every modality in ``x``.
        """
        hs, total = self.encode_sum(x, rows)
        if total is None:
            raise ValueError("no modality to encode")
        return self.fuse_encodings(hs, rows, next(iter(x.values())).shape[0], total, inv_count), hs

    def fuse_encodings(self, hs: dict[str, Tensor], rows: Rows, n: int, total: Tensor | None = None,
                       inv_count: Tensor | float | None = None) -> Tensor:
        """The fusion rule on encodings already computed (``hs``: modality -> encodings of the rows
        ``rows`` names): the plain mean, or the reliability-weighted one. ``fuse`` uses it on fresh
        encodings; the conflict score on stored ones, fused over a subset of an item's modalities."""
        if self.fusion == "reliability":
            weighted, norm = self._weighted(hs, rows, n)
            return weighted / norm
        total = self._sum(hs, rows, n) if total is None else total
        if total is None:
            raise ValueError("no modality to encode")
        return total * (1.0 / len(hs) if inv_count is None else inv_count)

    def _weighted(self, hs: dict[str, Tensor], rows: Rows, n: int) -> tuple[Tensor, Tensor]:
        """Σ_m w_m h_m and Σ_m w_m over the modalities each row has, w = exp(fusion_logit): a row
        with nothing gets 0 / 0 = NaN, as the mean does."""
        w = self.fusion_logit.exp()
        ref = next(iter(hs.values()))
        total = ref.new_zeros(n, self.latent)
        norm = ref.new_zeros(n, 1)
        for m, h in hs.items():
            j, r = self.names.index(m), rows.get(m)
            if r is None:
                total = total + w[j] * h
                norm = norm + w[j]
            else:
                total = total.index_add(0, r, w[j] * h)
                norm = norm.index_add(0, r, w[j].expand(r.numel(), 1))
        return total, norm

    def _dense(self, hs: dict[str, Tensor], rows: Rows, n: int) -> tuple[Tensor, Tensor]:
        """Encodings as (M, B, latent) with zeros where a row lacks m, and the (M, B) mask of who has it."""
        ref = next(iter(hs.values()))
        Hs, Ks = [], []
        for m in self.names:
            h, r = hs.get(m), rows.get(m)
            if h is None:
                Hs.append(ref.new_zeros(n, self.latent))
                Ks.append(ref.new_zeros(n))
            elif r is None:
                Hs.append(h)
                Ks.append(ref.new_ones(n))
            else:
                Hs.append(ref.new_zeros(n, self.latent).index_copy(0, r, h))
                Ks.append(ref.new_zeros(n).index_fill(0, r, 1.0))
        return torch.stack(Hs), torch.stack(Ks)

    def contrastive(self, hs: dict[str, Tensor], rows: Rows, n: int, temperature: float) -> Tensor:
        """Symmetric InfoNCE between every pair of modalities over the rows that encoded both: row i's
        latent of a should be nearer (cosine / ``temperature``) to row i's latent of b than to any other
        row's, and the other way round. Mean over pairs with at least two shared rows (0 if none)."""
        H, K = self._dense(hs, rows, n)
        Hn = F.normalize(H, dim=-1)
        present = [j for j in range(len(self.names)) if self.names[j] in hs]
        terms = []
        for ia, a in enumerate(present):
            for b in present[ia + 1:]:
                both = torch.nonzero((K[a] * K[b]) > 0).squeeze(1)
                if both.numel() < 2:
                    continue
                logits = Hn[a].index_select(0, both) @ Hn[b].index_select(0, both).T / temperature
                target = torch.arange(both.numel(), device=logits.device)
                terms.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
        return torch.stack(terms).mean() if terms else H.new_zeros(())

    def cross_reconstruction(self, x: dict[str, Tensor], hs: dict[str, Tensor], enc_rows: Rows, dec_rows: Rows, n: int) -> Tensor:
        """Σ_m MSE(x_m, D_m(fusion of the *other* modalities)) over the rows that have m and encoded at
        least one other: the decoders learn to fill in a modality, the encoders to carry what the
        others need."""
        H, K = self._dense(hs, enc_rows, n)
        w = self.fusion_logit.exp()[:, None] if self.fusion == "reliability" else H.new_ones(len(self.names), 1)
        WK = w * K  # (M, B)
        total = (WK.unsqueeze(-1) * H).sum(0)
        norm = WK.sum(0)
        out = []
        for j, m in enumerate(self.names):
            if m not in x:
                continue
            has = torch.ones(n, dtype=torch.bool, device=H.device) if dec_rows.get(m) is None else torch.zeros(n, dtype=torch.bool, device=H.device).index_fill(0, dec_rows[m], True)
            other = norm - WK[j]
            sel = torch.nonzero(has & (other > 0)).squeeze(1)
            if sel.numel() == 0:
                continue
            z_other = (total - WK[j].unsqueeze(-1) * H[j]).index_select(0, sel) / other.index_select(0, sel).unsqueeze(-1)
            out.append(F.mse_loss(self.dec[j](z_other), x[m].index_select(0, sel)))
        return torch.stack(out).sum() if out else H.new_zeros(())

    def reconstruction_losses(self, z: Tensor, x: dict[str, Tensor], rows: Rows, which: list[int] | None = None) -> list[Tensor]:
        """MSE between x_m and D_m(z) over the rows that have m, for each modality in ``which``."""
        out = []
        for j in range(len(self.names)) if which is None else which:
            m, r = self.names[j], rows.get(self.names[j])
            if r is None:
                out.append(F.mse_loss(self.dec[j](z), x[m]))
            elif r.numel() == 0:
                out.append(z.new_zeros(()))  # nobody in this batch has m: nothing to score
            else:
                out.append(F.mse_loss(self.dec[j](z.index_select(0, r)), x[m].index_select(0, r)))
        return out

    @staticmethod
    def alignment(hs: dict[str, Tensor], z: Tensor, rows: Rows) -> Tensor:
        """Σ_m ||z_m − z||² summed over the rows that encoded m, divided by the batch size."""
        sq = [((h - (z if rows.get(m) is None else z.index_select(0, rows[m]))) ** 2).sum() for m, h in hs.items()]
        return torch.stack(sq).sum() / z.shape[0]

    def forward(
        self,
        x: dict[str, Tensor],
        enc_rows: Rows,
        dec_rows: Rows,
        inv_count: Tensor | None = None,
        align_weight: float = 0.0,
        contrastive_weight: float = 0.0,
        temperature: float = 0.1,
        cross_weight: float = 0.0,
        input_noise: float = 0.0,
        noise_full_width: int = 1,
    ) -> Output:
        """Training objective as one graph: Σ_m MSE(x_m, D_m(z)) over the items that have m, plus each
        optional term (module docstring) times its weight; a term at weight 0 is not computed.

        ``enc_rows`` may be a subset of ``dec_rows`` (modality dropout): decoders still reconstruct
        every modality an item has from the latent of the ones it kept. With ``input_noise`` the
        encoders see ``x`` plus noise of that std (``noise_std`` per view, drawn from torch's seeded
        global generator) and the targets stay ``x``.
        """
        seen = x if input_noise <= 0 else {m: v + noise_std(v.shape[1], input_noise, noise_full_width)
                                            * torch.randn_like(v) for m, v in x.items()}
        z, zs = self.fuse(seen, enc_rows, inv_count)
        parts = self.reconstruction_losses(z, x, dec_rows)
        loss = torch.stack(parts).sum()
        n = z.shape[0]
        aux = []
        for weight, term in (
            (align_weight, lambda: self.alignment(zs, z, enc_rows)),
            (contrastive_weight, lambda: self.contrastive(zs, enc_rows, n, temperature)),
            (cross_weight, lambda: self.cross_reconstruction(x, zs, enc_rows, dec_rows, n)),
        ):
            if weight > 0:
                value = term()
                loss = loss + weight * value
            else:
                value = z.new_zeros(())
            aux.append(value)
        return Output(loss, torch.stack([*parts, *aux, loss]).detach(), z, zs)

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        return {m: dec(z) for m, dec in zip(self.names, self.dec)}
