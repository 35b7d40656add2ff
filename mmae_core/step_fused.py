"""The training step for the common case, with the modalities fused into shared ops.

When every item has every modality, nothing is dropped and there is no alignment term (the paper
preset on complete data, the default), every encoder and decoder sees the same rows. The layers of
all modalities can then run as one op wherever the math allows, instead of one op per modality:

* each hidden layer's BatchNorm, ReLU and their backward passes run once over the modalities'
  activations side by side, (B, M·h) — BatchNorm is per feature, so this is the same function;
* the decoders' first layers are one matmul from z (their weights stacked), and so are their weight
  and input gradients;
* the encoders' last layers and the fusion mean are one matmul, z = [a_1 … a_M] · [W_1 … W_M]ᵀ / M
  (+ the mean bias), with its gradients;
* the data sit side by side as one (n, D) tensor: one gather per batch, one subtraction and one
  scaling for the reconstruction error and its gradient, one sum for the decoders' biases.

Why: on a small model at batch 128 a step's cost beyond its matmuls is op dispatch (a few
microseconds each, under the GIL), and this step issues about half the ops of the per-modality
one (``train._Stepper``), whose extra ops are mostly tiny elementwise ones. The remaining per-
modality matmuls read and write column blocks of the shared buffers in place (BLAS takes the row
stride), so nothing is copied. The tests check the gradients against autograd's.

The model's parameters become views of one flat buffer laid out for this (per fused layer, the
modalities' blocks adjacent; the encoders' last weights interleaved by row so that together they
form [W_1 … W_M]), and one fused Adam update runs over it.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
from torch import Tensor

from .model import MMAE

_threshold_backward = torch.ops.aten.threshold_backward.default
_bn_backward = torch.ops.aten.native_batch_norm_backward.default
_bn_forward_out = torch.ops.aten.native_batch_norm.out


class FlatAdam:
    """Adam (AdamW with weight decay) over one flat parameter buffer, as torch.optim's fused
    kernel computes it, called directly: ``Optimizer.step``'s Python bookkeeping (hooks, parameter
    grouping, state lookups) cost about 70 µs a step here, a quarter of the update itself. The tests
    check that it matches torch.optim.Adam/AdamW bit for bit."""

    def __init__(self, param: Tensor, grad: Tensor, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.grad = param, grad
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        self.steps = torch.zeros((), dtype=torch.float32, device=param.device)
        self.kernel = torch._fused_adamw_ if weight_decay > 0 else torch._fused_adam_
        self.kw = dict(lr=lr, beta1=betas[0], beta2=betas[1], weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)

    def step(self) -> None:
        self.steps.add_(1)
        self.kernel([self.param], [self.grad], [self.exp_avg], [self.exp_avg_sq], [], [self.steps], **self.kw)


class _Flat:
    """Hands out consecutive regions of one parameter buffer and its gradient buffer."""

    def __init__(self, total: int, like: Tensor):
        self.data = like.new_empty(total)
        self.grad = like.new_zeros(total)
        self.at = 0

    def region(self, n: int) -> tuple[Tensor, Tensor]:
        a, self.at = self.at, self.at + n
        return self.data[a : self.at], self.grad[a : self.at]

    def adjacent(self, params: list[nn.Parameter]) -> tuple[Tensor, Tensor]:
        """Place ``params`` one after the other; return the region and its gradient (flat)."""
        data, grad = self.region(sum(p.numel() for p in params))
        at = 0
        for p in params:
            n = p.numel()
            _adopt(p, data[at : at + n].view_as(p), grad[at : at + n].view_as(p))
            at += n
        return data, grad

    def one(self, p: nn.Parameter) -> tuple[Tensor, Tensor, Tensor]:
        """Place one weight; return it, its transpose (a view, made once: a step would otherwise
        make dozens) and its gradient, as plain tensors of its shape."""
        data, grad = self.adjacent([p])
        return data.view_as(p), data.view_as(p).t(), grad.view_as(p)

    def side_by_side(self, weights: list[nn.Parameter]) -> tuple[Tensor, Tensor]:
        """Place equal-shaped (out, in) weights so that together they form the (out, M·in) matrix
        [W_1 … W_M]; each weight is a strided view of it."""
        out, inp = weights[0].shape
        data, grad = self.region(out * inp * len(weights))
        data, grad = data.view(out, -1), grad.view(out, -1)
        for m, p in enumerate(weights):
            _adopt(p, data[:, m * inp : (m + 1) * inp], grad[:, m * inp : (m + 1) * inp])
        return data, grad


def _adopt(p: nn.Parameter, data: Tensor, grad: Tensor) -> None:
    data.copy_(p.detach())
    p.data = data
    p.grad = grad


def _adopt_buffers(buffers: list[Tensor]) -> Tensor:
    """BatchNorm running statistics of all modalities as one tensor, each module's a view of it."""
    cat = torch.cat([b.detach() for b in buffers])
    at = 0
    for b in buffers:
        n = b.numel()
        b.data = cat[at : at + n]
        at += n
    return cat


class _BN:
    """One fused BatchNorm layer: parameters, gradients and running statistics of all modalities."""

    def __init__(self, flat: _Flat, bns: list[nn.BatchNorm1d]):
        self.gamma, self.g_gamma = flat.adjacent([bn.weight for bn in bns])
        self.beta, self.g_beta = flat.adjacent([bn.bias for bn in bns])
        self.mean = _adopt_buffers([bn.running_mean for bn in bns])
        self.var = _adopt_buffers([bn.running_var for bn in bns])
        self.momentum, self.eps = bns[0].momentum, bns[0].eps

    def forward(self, t: "_Layer", batch_stats: bool) -> None:
        """BatchNorm then ReLU of t.y into t.a, keeping the batch statistics for the backward pass."""
        _bn_forward_out(t.y, self.gamma, self.beta, self.mean, self.var, batch_stats, self.momentum, self.eps,
                        out=t.a, save_mean=t.mean, save_invstd=t.invstd)
        t.a.relu_()

    def backward(self, t: "_Layer", batch_stats: bool) -> Tensor:
        """From d loss / d t.a (in t.g) back through ReLU and BatchNorm to d loss / d t.y; writes
        the γ and β gradients."""
        g = _threshold_backward(t.g, t.a, 0)
        g, g_gamma, g_beta = _bn_backward(g, t.y, self.gamma, self.mean, self.var, t.mean, t.invstd, batch_stats, self.eps, [True, True, True])
        self.g_gamma.copy_(g_gamma)
        self.g_beta.copy_(g_beta)
        return g


class _Layer:
    """One fused hidden layer's buffers for a batch size: pre-BatchNorm y, post-ReLU a, the batch
    statistics, d loss / d a (g), and each modality's column block of y, a and g."""

    def __init__(self, B: int, M: int, width: int, like: Tensor):
        self.y, self.a, self.g = (like.new_empty(B, M * width) for _ in range(3))
        self.mean, self.invstd = like.new_empty(M * width), like.new_empty(M * width)
        blocks = lambda t: [t[:, m * width : (m + 1) * width] for m in range(M)]  # noqa: E731
        self.y_blocks, self.a_blocks, self.g_blocks = blocks(self.y), blocks(self.a), blocks(self.g)


class _Workspace:
    """Every buffer and column-block view a step of batch size B needs, made once: a step reuses
    them instead of allocating and slicing anew (a step made about 60 views; each costs a
    microsecond or two of Python)."""

    def __init__(self, B: int, like: Tensor, cols: list[tuple[int, int]], M: int, hidden: list[int], dec_widths: list[int]):
        D = cols[-1][1]
        self.x, self.out = like.new_empty(B, D), like.new_empty(B, D)
        self.x_blocks = [self.x[:, a:e] for a, e in cols]
        self.out_blocks = [self.out[:, a:e] for a, e in cols]
        self.out_blocks_t = [b.t() for b in self.out_blocks]
        self.enc = [_Layer(B, M, w, like) for w in hidden]
        self.dec = [_Layer(B, M, w, like) for w in dec_widths]


def _linears(seq: nn.Sequential) -> list[nn.Linear]:
    return [layer for layer in seq if isinstance(layer, nn.Linear)]


def _norms(seq: nn.Sequential) -> list[nn.BatchNorm1d]:
    return [layer for layer in seq if isinstance(layer, nn.BatchNorm1d)]


class FusedStepper:
    """One optimization step over complete batches (every item has every modality), without
    modality dropout or alignment; see the module docstring. Call it with the batch as one (B, D)
    tensor (the modalities' standardized columns side by side, in model order); it returns the
    (M + 2,) losses: per-modality reconstruction MSE, alignment (0) and total."""

    def __init__(self, model: MMAE, lr: float, weight_decay: float = 0.0):
        self.model = model
        M, L, c = len(model.names), len(model.hidden), model.latent
        self.M, self.hidden, self.dims = M, list(model.hidden), list(model.modalities.values())
        self.cols = []
        at = 0
        for d in self.dims:
            self.cols.append((at, at + d))
            at += d
        enc = [_linears(s) for s in model.enc]  # per modality: L + 1 Linears
        dec = [_linears(s) for s in model.dec]
        total = sum(p.numel() for p in model.parameters())
        flat = _Flat(total, next(model.parameters()))
        with torch.no_grad():
            # encoder hidden layers: per-modality weights, fused BatchNorms
            self.enc_w = [[flat.one(enc[m][k].weight) for m in range(M)] for k in range(L)]
            self.enc_bn = [_BN(flat, [_norms(s)[k] for s in model.enc]) for k in range(L)]
            # encoder last layers + fusion mean: one (c, M·h_L) weight, M biases side by side
            self.enc_last, self.g_enc_last = flat.side_by_side([enc[m][L].weight for m in range(M)])
            self.enc_last_t = self.enc_last.t()
            b, gb = flat.adjacent([enc[m][L].bias for m in range(M)])
            self.enc_bias, self.g_enc_bias = b.view(M, c), gb.view(M, c)
            # decoder first layers: one (M·h_L, c) weight
            w, gw = flat.adjacent([dec[m][0].weight for m in range(M)])
            self.dec_first, self.g_dec_first = w.view(M * self.hidden[-1], c), gw.view(M * self.hidden[-1], c)
            self.dec_first_t = self.dec_first.t()
            self.dec_bn = [_BN(flat, [_norms(s)[k] for s in model.dec]) for k in range(L)]
            # decoder middle layers (per modality), last layers (per modality) and their biases side by side
            self.dec_w = [[flat.one(dec[m][k].weight) for m in range(M)] for k in range(1, L + 1)]
            self.dec_bias, self.g_dec_bias = flat.adjacent([dec[m][L].bias for m in range(M)])
            assert flat.at == total, "every parameter placed exactly once"
        self.params = list(model.parameters())
        self.adam = FlatAdam(flat.data, flat.grad, lr, weight_decay)
        self._scale: dict[int, Tensor] = {}
        self._spaces: dict[int, _Workspace] = {}
        # (M + 2, D): per-modality mean over its columns, the alignment slot (0), the total
        seg = self.enc_bias.new_zeros(M + 2, at)
        for m, (a, e) in enumerate(self.cols):
            seg[m, a:e] = 1.0 / (e - a)
        seg[M + 1] = seg[:M].sum(0)
        self.seg = seg
        self.inv_dims = seg[:M].sum(0)  # 1 / d_m per column

    def close(self) -> None:
        """Give the parameters and running statistics their own (contiguous) storage again."""
        for p in self.params:
            p.data = p.data.clone(memory_format=torch.contiguous_format)
            p.grad = None
        for b in self.model.buffers():
            b.data = b.data.clone()

    def columns(self, X: Tensor) -> dict[str, Tensor]:
        """Per-modality views of a tensor in this step's side-by-side (n, D) layout."""
        return {m: X[:, a:e] for m, (a, e) in zip(self.model.names, self.cols)}

    def batches(self, X: Tensor, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
        """One shuffled epoch of (B, D) batches, each gathered into its workspace (the same
        permutation draw as ``train._epoch_batches``, so the two paths shuffle alike)."""
        perm = torch.randperm(X.shape[0], generator=gen).to(X.device)
        for s in range(0, X.shape[0], batch_size):
            idx = perm[s : s + batch_size]
            yield torch.index_select(X, 0, idx, out=self._space(len(idx), X).x)

    def _space(self, B: int, like: Tensor) -> _Workspace:
        ws = self._spaces.get(B)
        if ws is None:
            dec_widths = [self.hidden[len(self.hidden) - 1 - k] for k in range(len(self.hidden))]
            ws = self._spaces[B] = _Workspace(B, like, self.cols, self.M, self.hidden, dec_widths)
        return ws

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        M, L, h = self.M, len(self.hidden), self.hidden
        B = x.shape[0]
        ws = self._space(B, x)
        if x is not ws.x:  # a batch from elsewhere than batches()
            ws.x.copy_(x)
        x = ws.x
        stats = B > 1  # a lone row: running statistics, as model.BatchNorm does
        # ---- encoders, layer by layer over all modalities, then z in one matmul
        ins = ws.x_blocks
        for k in range(L):
            e = ws.enc[k]
            for m in range(M):
                torch.mm(ins[m], self.enc_w[k][m][1], out=e.y_blocks[m])
            self.enc_bn[k].forward(e, stats)
            ins = e.a_blocks
        a_last = ws.enc[-1].a
        z = torch.addmm(self.enc_bias.sum(0), a_last, self.enc_last_t, beta=1.0 / M, alpha=1.0 / M)
        # ---- decoders: the first layer in one matmul, then per modality into column blocks
        d = ws.dec[0]
        torch.mm(z, self.dec_first_t, out=d.y)
        self.dec_bn[0].forward(d, stats)
        for k in range(1, L):
            prev, d = ws.dec[k - 1], ws.dec[k]
            for m in range(M):
                torch.mm(prev.a_blocks[m], self.dec_w[k - 1][m][1], out=d.y_blocks[m])
            self.dec_bn[k].forward(d, stats)
        for m in range(M):
            torch.mm(d.a_blocks[m], self.dec_w[L - 1][m][1], out=ws.out_blocks[m])
        diff = ws.out.add_(self.dec_bias).sub_(x)
        parts = torch.mv(self.seg, diff.square().sum(0)).div_(B)
        g = diff.mul_(self._grad_scale(B))  # d(Σ_m MSE_m)/d(out): 2 / (B·d_m) per column; g is ws.out
        # ---- decoders backward
        torch.sum(g, 0, out=self.g_dec_bias)
        last = ws.dec[L - 1]
        for m in range(M):
            w, _, gw = self.dec_w[L - 1][m]
            torch.mm(ws.out_blocks_t[m], last.a_blocks[m], out=gw)
            torch.mm(ws.out_blocks[m], w, out=last.g_blocks[m])
        for k in range(L - 1, -1, -1):
            d = ws.dec[k]
            g = self.dec_bn[k].backward(d, stats)
            if k == 0:
                torch.mm(g.t(), z, out=self.g_dec_first)
                g_z = torch.mm(g, self.dec_first)
            else:
                prev, wd = ws.dec[k - 1], d.a.shape[1] // M
                for m in range(M):
                    w, _, gw = self.dec_w[k - 1][m]
                    gm = g[:, m * wd : (m + 1) * wd]
                    torch.mm(gm.t(), prev.a_blocks[m], out=gw)
                    torch.mm(gm, w, out=prev.g_blocks[m])
        # ---- encoders backward: z = (Σ_m a_m W_mᵀ + Σ_m b_m) / M
        g_z.mul_(1.0 / M)
        torch.mm(g_z.t(), a_last, out=self.g_enc_last)
        self.g_enc_bias.copy_(g_z.sum(0, keepdim=True).expand_as(self.g_enc_bias))
        torch.mm(g_z, self.enc_last, out=ws.enc[-1].g)
        for k in range(L - 1, -1, -1):
            e = ws.enc[k]
            g = self.enc_bn[k].backward(e, stats)
            ins = ws.enc[k - 1].a_blocks if k > 0 else ws.x_blocks
            for m in range(M):
                w, _, gw = self.enc_w[k][m]
                gm = g[:, m * h[k] : (m + 1) * h[k]]
                torch.mm(gm.t(), ins[m], out=gw)
                if k > 0:
                    torch.mm(gm, w, out=ws.enc[k - 1].g_blocks[m])
        self.adam.step()
        return parts

    def _grad_scale(self, B: int) -> Tensor:
        s = self._scale.get(B)
        if s is None:
            s = self._scale[B] = self.inv_dims * (2.0 / B)
        return s
