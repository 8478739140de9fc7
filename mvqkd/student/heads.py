"""Distillation heads: codebook-index prediction (MVQ-KD) and float KD regression.

Rate alignment (teacher 50 Hz -> student 25 Hz), :func:`align_teacher_to_student`:
student frame t is paired with teacher frames 2t and 2t + 1, concatenated along the
codebook axis::

    target[b, t, j * N + n] = indexes[b, 2 t + j, n]      j in {0, 1}, n < N

and the entry is the ignore index -100 when teacher frame 2t + j does not exist (a teacher
shorter than 2 T25 is padded; with an odd teacher length the last student frame keeps its
first half and ignores its second), is padding (any negative index in the input), or when
student frame t is padding (t >= student_lens[b]). Teacher frames 2 T25 and later have no
student frame and are not used. This is the reference's reshape
(icefall pruned_transducer_stateless6 ``concat_successive_codebook_indexes``) with explicit
handling of the odd and short cases instead of an assertion.

Float embeddings (L1/L2/cosine KD baselines) are paired the same way
(:func:`pair_frames`), with a validity mask per half.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mvqkd.conventions import CODEBOOK_WEIGHTINGS, IGNORE_INDEX, TEACHER_FRAMES_PER_STUDENT_FRAME as R


def pair_frames(x: torch.Tensor, num_student_frames: int, fill) -> torch.Tensor:
    """(B, T50, C) -> (B, T25, 2, C): frames 2t and 2t+1 under student frame t; teacher
    frames past 2 T25 are dropped, missing ones are ``fill``."""
    b, t50, c = x.shape
    want = R * num_student_frames
    if t50 >= want:
        x = x[:, :want]
    else:
        x = torch.cat([x, x.new_full((b, want - t50, c), fill)], dim=1)
    return x.reshape(b, num_student_frames, R, c)


def _student_valid(num_student_frames: int, student_lens: Optional[torch.Tensor], b: int,
                   device) -> torch.Tensor:
    """(B, T25) bool, True on valid student frames."""
    t = torch.arange(num_student_frames, device=device)[None, :]
    if student_lens is None:
        return t.expand(b, -1) >= 0
    return t < student_lens.to(device)[:, None]


def align_teacher_to_student(indexes: torch.Tensor, num_student_frames: int,
                             student_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Teacher codebook indexes (B, T50, N) at 50 Hz (negative = padding) -> long targets
    (B, T25, 2N) at 25 Hz with -100 where ignored (rule in the module docstring)."""
    if indexes.dim() != 3:
        raise ValueError(f"codebook indexes must be (B, T50, N), got {tuple(indexes.shape)}")
    idx = indexes.long()
    idx = idx.masked_fill(idx < 0, IGNORE_INDEX)
    b, _, n = idx.shape
    out = pair_frames(idx, num_student_frames, IGNORE_INDEX).reshape(b, num_student_frames, R * n)
    valid = _student_valid(num_student_frames, student_lens, b, idx.device)
    return out.masked_fill(~valid[:, :, None], IGNORE_INDEX)


def align_embeddings_to_student(emb: torch.Tensor, teacher_lens: torch.Tensor,
                                num_student_frames: int,
                                student_lens: Optional[torch.Tensor] = None
                                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher embeddings (B, T50, D) with lengths (B,) -> ((B, T25, 2, D), valid (B, T25, 2))
    by the same pairing rule as :func:`align_teacher_to_student`."""
    if emb.dim() != 3:
        raise ValueError(f"teacher embeddings must be (B, T50, D), got {tuple(emb.shape)}")
    b, t50, _ = emb.shape
    valid50 = torch.arange(t50, device=emb.device)[None, :] < teacher_lens.to(emb.device)[:, None]
    pairs = pair_frames(emb, num_student_frames, 0.0)
    valid = pair_frames(valid50[:, :, None], num_student_frames, False)[..., 0]
    valid = valid & _student_valid(num_student_frames, student_lens, b, emb.device)[:, :, None]
    return pairs, valid


class CodebookHead(nn.Module):
    """Predicts ``num_codebooks`` (= 2N teacher codebooks) indexes of ``codebook_size``
    entries per student frame from ``x`` (B, T, E).

    ``joint=False``: independent softmaxes, logits = ``x @ W_c^T + b_c`` per codebook c.
    ``joint=True``: the reference's joint/autoregressive head (multi_quantization's
    ``JointCodebookLoss``): codebook c additionally gets ``W2_c relu(h)`` with
    ``h = linear1(x) + s * sum_{c' < c} emb[c', target_{c'}]`` (teacher forcing on the
    earlier codebooks, ``s = 0.5 sqrt(hidden / num_codebooks)``).

    ``geometry_dim`` D > 0 (the quantizer's dimension) makes the head read the quantizer's
    geometry instead of free weights: a linear map predicts R normalised teacher embeddings
    ``y_j`` (D) per student frame, and head codebook ``c = j N + n`` scores codeword k by
    ``s_c (2 <y_j, C[n, k]> - ||C[n, k]||^2) + b[c, k]``, i.e. ``-s_c ||y_j - C[n, k]||^2`` up to
    a term the softmax ignores: the codeword nearest the predicted embedding wins. ``C`` is the
    buffer ``codewords`` (N, K, D), the quantizer's codebooks set by :meth:`set_codewords`
    (which also starts ``s_c`` at 1 / mean_k ||C[n, k]||^2); ``s_c = exp(log_scale[c])`` and
    ``b`` are learnt. All codebooks share one predicted embedding, so the cross-entropy pulls
    it towards the sum of the target codewords, the quantizer's reconstruction.
    ``geometry_residual`` scores codebook n given the frame's other target codewords
    (teacher forcing, as the joint head does): ``-s_c ||y_j - sum_{m != n} C[m, t_jm] -
    C[n, k]||^2`` + const, the quantity the additive quantizer's ICM minimises per codebook,
    so with ``y_j`` the normalised teacher frame each codebook's best codeword is the one
    ICM would pick; ignored entries (-100) add no codeword.

    ``mlp_dim > 0`` puts one hidden layer (``mlp_dim`` units, SiLU) before the per-codebook
    linear layers. ``label_smoothing`` eps trains on ``(1 - eps) * onehot + eps / K``
    (PyTorch's ``cross_entropy(label_smoothing=eps)``), or, with ``neighbour_codebooks`` N
    (> 0), on ``(1 - eps) * onehot(i) + eps * q[c % N, i]``: the smoothing mass goes to the
    codewords nearest the target's in the quantizer's codebook
    (:func:`mvqkd.quantizer.codeword_neighbours`, the buffer ``neighbours`` (N, K, K) set by
    :meth:`set_neighbours`; head codebook c = j N + n reads teacher codebook n).

    ``weighting="energy"`` (geometry heads only) weighs head codebook c = j N + n's
    cross-entropy by ``w_n = E_n^p / mean_m E_m^p``, ``E_n = mean_k ||C[n, k]||^2`` the energy
    of teacher codebook n's codewords and ``p = weighting_power`` (the weights average 1, so
    the loss scale keeps its meaning): with p = 1 each codebook pulls the predicted embedding
    in proportion to what it adds to the quantizer's reconstruction, as a regression onto
    that reconstruction would, instead of the small late codebooks pulling as hard as the
    first; p > 1 leans further towards the first, coarse codebooks. ``"uniform"``: all
    weights 1.
    """

    def __init__(self, input_dim: int, num_codebooks: int, codebook_size: int,
                 joint: bool = False, hidden_dim: int = 512, mlp_dim: int = 0,
                 label_smoothing: float = 0.0, neighbour_codebooks: int = 0,
                 geometry_dim: int = 0, geometry_residual: bool = False,
                 weighting: str = "uniform", weighting_power: float = 1.0):
        super().__init__()
        if num_codebooks < 1:
            raise ValueError("CodebookHead needs num_codebooks >= 1")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if neighbour_codebooks < 0 or (neighbour_codebooks and num_codebooks % neighbour_codebooks):
            raise ValueError(f"neighbour_codebooks={neighbour_codebooks} must divide the head's "
                             f"{num_codebooks} codebooks")
        self.num_codebooks, self.codebook_size, self.joint = num_codebooks, codebook_size, joint
        self.label_smoothing = label_smoothing
        self.register_buffer("neighbours", torch.zeros(neighbour_codebooks, codebook_size,
                                                       codebook_size) if neighbour_codebooks else None)
        # whether ``neighbours`` holds a table: set by set_neighbours() and when a state dict
        # is loaded (checked there once, not on every step: the check is a device sync)
        self.neighbours_ready = False
        self.register_load_state_dict_post_hook(CodebookHead._check_loaded_tables)
        self.pre = None
        if mlp_dim > 0:
            self.pre = nn.Sequential(nn.Linear(input_dim, mlp_dim), nn.SiLU())
            input_dim = mlp_dim
        c, k = num_codebooks, codebook_size
        self.geometry = geometry_dim > 0
        if geometry_residual and not self.geometry:
            raise ValueError("geometry_residual needs geometry_dim > 0 (the quantizer's dimension)")
        self.geometry_residual = geometry_residual
        if weighting not in CODEBOOK_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {CODEBOOK_WEIGHTINGS}, got {weighting!r}")
        if weighting != "uniform" and not self.geometry:
            raise ValueError(f"weighting={weighting!r} needs geometry_dim > 0 (it reads the "
                             f"quantizer's codewords)")
        if not weighting_power > 0 or (weighting_power != 1.0 and weighting != "energy"):
            raise ValueError(f"weighting_power must be > 0, and 1 unless weighting='energy'; got "
                             f"{weighting_power} with weighting={weighting!r}")
        self.weighting, self.weighting_power = weighting, float(weighting_power)
        # whether ``codewords`` holds a quantizer's: set by set_codewords() and at state-dict load
        self.codewords_ready = False
        if self.geometry:
            if joint or mlp_dim > 0 or num_codebooks % R:
                raise ValueError(f"the geometry codebook head needs independent codebooks, no MLP "
                                 f"and a multiple of {R} codebooks, got joint={joint}, "
                                 f"mlp_dim={mlp_dim}, num_codebooks={num_codebooks}")
            self.embed = nn.Linear(input_dim, R * geometry_dim)
            self.log_scale = nn.Parameter(torch.zeros(c))
            self.register_buffer("codewords", torch.zeros(c // R, k, geometry_dim))
        else:
            self.weight = nn.Parameter(torch.randn(c, k, input_dim) / math.sqrt(input_dim))
        self.bias = nn.Parameter(torch.zeros(c, k))
        if joint:
            if num_codebooks < 2:
                raise ValueError("the joint codebook head needs at least 2 codebooks")
            self.linear1 = nn.Linear(input_dim, hidden_dim)
            self.codebook_embedding = nn.Parameter(
                torch.randn((c - 1) * k, hidden_dim) / math.sqrt(hidden_dim))
            self.hidden_weight = nn.Parameter(torch.randn(c, k, hidden_dim) / math.sqrt(hidden_dim))
            self.embedding_scale = 0.5 * math.sqrt(hidden_dim / c)

    def logits(self, x: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, E) -> (B, T, C, K). The joint head needs ``targets`` (B, T, C) (teacher
        forcing; negative entries are treated as index 0, they are ignored by the loss)."""
        c, k = self.num_codebooks, self.codebook_size
        if self.pre is not None:
            x = self.pre(x)
        if self.geometry:
            return self._geometry_logits(x, targets)
        out = F.linear(x, self.weight.reshape(c * k, -1), self.bias.reshape(-1))
        out = out.reshape(*x.shape[:-1], c, k)
        if self.joint:
            if targets is None:
                raise ValueError("the joint codebook head needs the targets (teacher forcing)")
            prev = targets[..., :-1].clamp(min=0) + torch.arange(
                0, (c - 1) * k, k, device=targets.device)  # (B, T, C-1)
            emb = F.embedding(prev, self.codebook_embedding) * self.embedding_scale
            h = torch.cat([self.linear1(x).unsqueeze(-2), emb], dim=-2).cumsum(dim=-2)
            out = out + torch.einsum("...ch,ckh->...ck", torch.relu(h), self.hidden_weight)
        return out

    def _geometry_logits(self, x: torch.Tensor, targets: Optional[torch.Tensor] = None
                         ) -> torch.Tensor:
        """(B, T, E) -> (B, T, C, K): ``s_c (2 <u, C[n, k]> - ||C[n, k]||^2) + b[c, k]`` with
        ``u = y_j``, or with ``geometry_residual`` ``u = y_j - sum_{m != n} C[m, t_jm]`` (needs
        ``targets`` (B, T, C))."""
        if not self.codewords_ready:
            raise RuntimeError("the geometry codebook head has no codewords: call set_codewords() "
                               "with the quantizer's codebooks before training")
        n, k, d = self.codewords.shape
        y = self.embed(x).reshape(*x.shape[:-1], R, d)
        if self.geometry_residual:
            if targets is None:
                raise ValueError("the residual geometry head needs the targets (teacher forcing)")
            u = y.unsqueeze(-2) - self._other_codewords(targets)  # (B, T, R, N, D)
            dots = torch.einsum("...rnd,nkd->...rnk", u, self.codewords)
        else:
            dots = torch.einsum("...rd,nkd->...rnk", y, self.codewords)
        sq = self.codewords.square().sum(-1)  # (N, K)
        out = (2.0 * dots - sq).reshape(*x.shape[:-1], R * n, k)
        return out * self.log_scale.exp()[:, None] + self.bias

    def codebook_weights(self) -> Optional[torch.Tensor]:
        """(C,) per-head-codebook weights of the cross-entropy (``weighting``,
        ``weighting_power``), or None for uniform weights."""
        if self.weighting == "uniform":
            return None
        energy = self.codewords.float().square().sum(-1).mean(-1).pow(self.weighting_power)  # (N,)
        return (energy / energy.mean().clamp(min=1e-30)).repeat(R)

    def _other_codewords(self, targets: torch.Tensor) -> torch.Tensor:
        """targets (B, T, R N) -> (B, T, R, N, D): for each head codebook c = j N + n, the sum
        of the target codewords of teacher frame j's other codebooks (-100 entries add 0)."""
        n = self.codewords.shape[0]
        t = targets.reshape(*targets.shape[:-1], R, n)
        books = torch.arange(n, device=t.device)
        chosen = self.codewords[books, t.clamp(min=0)]  # (B, T, R, N, D)
        chosen = chosen * (t >= 0).unsqueeze(-1).to(chosen.dtype)
        return chosen.sum(-2, keepdim=True) - chosen

    def set_codewords(self, codebooks: torch.Tensor) -> None:
        """The quantizer's codebooks (N, K, D) (its normalised space), and each head
        codebook's scale started at 1 / mean_k ||C[n, k]||^2."""
        if not self.geometry:
            raise RuntimeError("this codebook head was built without geometry_dim")
        if codebooks.shape != self.codewords.shape:
            raise ValueError(f"the quantizer's codebooks have shape {tuple(codebooks.shape)}; this "
                             f"head needs {tuple(self.codewords.shape)} (codebooks, K, dim)")
        self.codewords.copy_(codebooks)
        self.codewords_ready = bool(codebooks.abs().sum() > 0)
        mean_sq = codebooks.double().square().sum(-1).mean(-1).clamp(min=1e-12)  # (N,)
        with torch.no_grad():
            self.log_scale.copy_((-mean_sq.log()).repeat(R).to(self.log_scale))

    def set_neighbours(self, table: torch.Tensor) -> None:
        """The smoothing distributions (N, K, K) of :func:`mvqkd.quantizer.codeword_neighbours`."""
        if self.neighbours is None:
            raise RuntimeError("this codebook head was built without neighbour smoothing")
        if table.shape != self.neighbours.shape:
            raise ValueError(f"neighbour table must have shape {tuple(self.neighbours.shape)} "
                             f"(codebooks, K, K), got {tuple(table.shape)}")
        self.neighbours.copy_(table)
        self.neighbours_ready = bool(table.sum() > 0)

    @staticmethod
    def _check_loaded_tables(module: "CodebookHead", incompatible_keys) -> None:
        if module.neighbours is not None:
            module.neighbours_ready = bool(module.neighbours.sum() > 0)
        if module.geometry:
            module.codewords_ready = bool(module.codewords.abs().sum() > 0)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum of per-codebook cross-entropies over the entries of ``targets`` (B, T, C)
        that are not -100 (a scalar; normalised by the caller)."""
        if targets.shape[-1] != self.num_codebooks:
            raise ValueError(f"codebook targets have {targets.shape[-1]} codebooks per frame, "
                             f"the head predicts {self.num_codebooks}")
        logits = self.logits(x, targets).reshape(-1, self.codebook_size).float()
        flat = targets.reshape(-1)
        weights = self.codebook_weights()
        reduction = "sum" if weights is None else "none"
        if self.neighbours is None:
            loss = F.cross_entropy(logits, flat, ignore_index=IGNORE_INDEX, reduction=reduction,
                                   label_smoothing=self.label_smoothing)
        else:
            loss = self._neighbour_smoothed(logits, flat, reduction)
        if weights is None:
            return loss
        return (loss.reshape(-1, self.num_codebooks) * weights).sum()

    def _neighbour_smoothed(self, logits: torch.Tensor, flat: torch.Tensor,
                            reduction: str = "sum") -> torch.Tensor:
        """logits (M, K), targets (M,) with rows in (B, T, C) order ->
        ``-(1 - eps) log p(i) - eps sum_k q[c % N, i, k] log p(k)`` per row (M,) (0 for
        ignored rows) with ``reduction="none"``, or their sum."""
        if not self.neighbours_ready:
            raise RuntimeError("the neighbour table is empty: call set_neighbours() with the "
                               "quantizer's codeword_neighbours before training")
        valid = flat != IGNORE_INDEX
        idx = flat.clamp(min=0)
        logp = logits.log_softmax(-1)
        nll = -logp.gather(1, idx[:, None]).squeeze(1)
        book = (torch.arange(flat.numel(), device=flat.device) % self.num_codebooks
                ) % self.neighbours.shape[0]
        smooth = -(self.neighbours[book, idx] * logp).sum(-1)
        eps = self.label_smoothing
        rows = ((1.0 - eps) * nll + eps * smooth).masked_fill(~valid, 0.0)
        return rows if reduction == "none" else rows.sum()


class KDHead(nn.Module):
    """Regression of paired teacher embeddings: ``x`` (B, T25, E) -> (B, T25, 2, D) and a
    per-teacher-frame loss ``l1`` (mean |diff| over D), ``l2`` (mean squared diff over D)
    or ``cosine`` (1 - cos).

    With ``normalize`` the targets are standardised first, ``(t - target_mean) / target_std``
    per dimension; the two (D,) buffers are set once from the training embeddings
    (:meth:`set_target_stats`) and saved with the model."""

    def __init__(self, input_dim: int, teacher_dim: int, mode: str, normalize: bool = False):
        super().__init__()
        if mode not in ("l1", "l2", "cosine"):
            raise ValueError(f"unknown KD mode {mode!r}; choose l1, l2 or cosine")
        self.mode, self.teacher_dim, self.normalize = mode, teacher_dim, normalize
        self.proj = nn.Linear(input_dim, R * teacher_dim)
        if normalize:
            self.register_buffer("target_mean", torch.zeros(teacher_dim))
            self.register_buffer("target_std", torch.ones(teacher_dim))

    def set_target_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-dimension ``mean`` and ``std`` (D,) of the teacher embeddings."""
        if not self.normalize:
            raise RuntimeError("this KD head was built without normalize=True")
        if mean.shape != (self.teacher_dim,) or std.shape != (self.teacher_dim,):
            raise ValueError(f"target stats must have shape ({self.teacher_dim},), got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ValueError("target std must be > 0 in every dimension")
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)

    def forward(self, x: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``target`` (B, T25, 2, D), ``valid`` (B, T25, 2) -> summed loss over valid
        teacher frames (a scalar)."""
        if target.shape[-1] != self.teacher_dim:
            raise ValueError(f"teacher embeddings have dim {target.shape[-1]}, the KD head "
                             f"was built for kd_dim={self.teacher_dim}")
        pred = self.proj(x).float().reshape(*x.shape[:-1], R, self.teacher_dim)  # float32 under AMP
        target = target.float()
        if self.normalize:
            target = (target - self.target_mean) / self.target_std
        if self.mode == "l1":
            per_frame = (pred - target).abs().mean(-1)
        elif self.mode == "l2":
            per_frame = (pred - target).pow(2).mean(-1)
        else:
            per_frame = 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-6)
        return per_frame.masked_fill(~valid, 0.0).sum()

