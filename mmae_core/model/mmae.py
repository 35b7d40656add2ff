"""The multimodal autoencoder: one encoder and one decoder per modality, fused by a mean.

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
    parts: Tensor  # (M + 2,) detached: per-modality reconstruction MSE in model order, alignment, total
    z: Tensor  # (B, latent) fused latent
    zs: dict[str, Tensor]  # modality -> (rows fed to its encoder, latent)


class MMAE(nn.Module):
    def __init__(self, modalities: dict[str, int], latent: int = 128, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.modalities = dict(modalities)
        self.names = list(modalities)
        self.latent = int(latent)
        self.hidden = tuple(int(h) for h in hidden)
        # ModuleList (not ModuleDict) so any modality name is allowed; order = self.names.
        self.enc = nn.ModuleList(mlp([d, *self.hidden, self.latent]) for d in modalities.values())
        self.dec = nn.ModuleList(mlp([self.latent, *reversed(self.hidden), d]) for d in modalities.values())

    def encode_sum(self, x: dict[str, Tensor], rows: Rows, which: list[int] | None = None) -> tuple[dict[str, Tensor], Tensor | None]:
        """Encodings of the modalities ``which`` (indices, default all) present in ``x``, and their
        row-wise sum (B, latent) — the numerator of the fused mean (None if none was encoded)."""
        hs: dict[str, Tensor] = {}
        total: Tensor | None = None
        n = next(iter(x.values())).shape[0]
        for j in range(len(self.names)) if which is None else which:
            m = self.names[j]
            r = rows.get(m)
            if m not in x or (r is not None and r.numel() == 0):
                continue
            h = self.enc[j](x[m] if r is None else x[m].index_select(0, r))
            hs[m] = h
            if r is None:
                total = h if total is None else total + h
            else:
                total = (h.new_zeros(n, self.latent) if total is None else total).index_add(0, r, h)
        return hs, total

    def fuse(self, x: dict[str, Tensor], rows: Rows, inv_count: Tensor | float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Shared latent z = mean of the encodings an item has; also the per-modality encodings.

        ``x`` may hold any subset of the modalities; ``inv_count`` is 1 / (modalities encoded per row),
        shape (B, 1), or None when every row has every modality in ``x``.
        """
        hs, total = self.encode_sum(x, rows)
        if total is None:
            raise ValueError("no modality to encode")
        return total * (1.0 / len(hs) if inv_count is None else inv_count), hs

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
    ) -> Output:
        """Training objective as one graph: Σ_m MSE(x_m, D_m(z)) over the items that have m, + λ·alignment.

        ``enc_rows`` may be a subset of ``dec_rows`` (modality dropout): decoders still reconstruct
        every modality an item has from the latent of the ones it kept.
        """
        z, zs = self.fuse(x, enc_rows, inv_count)
        parts = self.reconstruction_losses(z, x, dec_rows)
        loss = torch.stack(parts).sum()
        if align_weight > 0:
            align = self.alignment(zs, z, enc_rows)
            loss = loss + align_weight * align
        else:
            align = z.new_zeros(())
        return Output(loss, torch.stack([*parts, align, loss]).detach(), z, zs)

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        return {m: dec(z) for m, dec in zip(self.names, self.dec)}
