"""Training losses, as plain functions of tensors (no process groups, no model).

GaitSSB's pretraining loss is SimSiam's predictor + stop-gradient made contrastive: each query
prediction is scored by cosine against every target projection of the global batch, per part.
Fine-tuning uses OpenGait's batch-all triplet loss per part (`batch_all_triplet`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE = 16.0  # cosine logits are multiplied by this (temperature 1/16)
LABEL_SMOOTHING = 0.1
TRIPLET_MARGIN = 0.3  # fine-tuning (OpenGait finetune configs)


def part_contrastive(
    pred: torch.Tensor,
    targets: torch.Tensor,
    positives: torch.Tensor,
    scale: float = SCALE,
    label_smoothing: float = LABEL_SMOOTHING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-part cross-entropy of cosine logits; returns (loss, top-1 accuracy), both means over parts.

    pred: (N, C, P) query predictions; targets: (M, C, P) projections, detached here (stop-gradient);
    positives: (N,) index into targets of each query's positive. Computed in float32 whatever the
    autocast dtype: logits of 16 x cosine need the precision.
    """
    if pred.dim() != 3 or targets.dim() != 3 or pred.shape[1:] != targets.shape[1:]:
        raise ValueError(f"pred (N, C, P) and targets (M, C, P) disagree: {pred.shape} vs {targets.shape}")
    q = F.normalize(pred.float(), dim=1).permute(2, 0, 1)  # (P, N, C)
    k = F.normalize(targets.detach().float(), dim=1).permute(2, 1, 0)  # (P, C, M)
    logits = scale * torch.bmm(q, k)  # (P, N, M)
    parts, n, m = logits.shape
    labels = positives.expand(parts, n)  # (P, N)
    loss = F.cross_entropy(logits.reshape(parts * n, m), labels.reshape(-1), label_smoothing=label_smoothing)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, accuracy


def gaitssb_loss(
    p_a: torch.Tensor,
    p_b: torch.Tensor,
    z_a_all: torch.Tensor,
    z_b_all: torch.Tensor,
    offset: int = 0,
    scale: float = SCALE,
    label_smoothing: float = LABEL_SMOOTHING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric GaitSSB loss: view a predicts view b's projection and vice versa.

    p_a, p_b: (N, C, P) this rank's predictions of the two clips of N sequences; z_a_all, z_b_all:
    (M, C, P) projections of the GLOBAL batch (all ranks, rank order), whose rows offset..offset+N-1
    are this rank's sequences. The two directions are summed (OpenGait weighs each 1.0, and the 0.05
    learning rate goes with that scale); accuracy is the mean of the two.
    """
    positives = torch.arange(offset, offset + p_a.shape[0], device=p_a.device)
    loss_ab, acc_ab = part_contrastive(p_a, z_b_all, positives, scale, label_smoothing)
    loss_ba, acc_ba = part_contrastive(p_b, z_a_all, positives, scale, label_smoothing)
    return loss_ab + loss_ba, (acc_ab + acc_ba) / 2


def labels_per_class(labels: torch.Tensor) -> int:
    """K of a P x K batch: how often each label occurs; ValueError unless every label occurs equally
    often and there are at least two. Reads the labels on the host: a loop passes CPU labels."""
    _, counts = torch.unique(labels, return_counts=True)
    if len(counts) < 2 or bool((counts != counts[0]).any()):
        raise ValueError("batch-all triplets need every label equally often and at least two labels")
    return int(counts[0])


def batch_all_triplet(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = TRIPLET_MARGIN,
    per_label: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-all triplet loss per part (fine-tuning); returns (loss, in-batch rank-1 accuracy).

    embeddings: (N, C, P); labels: (N,), each label equally often (a P x K batch). As OpenGait's
    TripletLoss: Euclidean distances per part; every (anchor, positive, negative) whose positive shares
    the anchor's label (the anchor itself included, as there) and whose negative does not; hinge
    `d(a, p) - d(a, n) + margin`, averaged over the non-zero terms of each part (0 when none), then
    over parts. The accuracy (for logging) is how often an anchor's nearest other sample, by distance
    averaged over parts, shares its label. Computed in at least float32 whatever the autocast dtype.

    `per_label` is K when the caller has checked the labels (`labels_per_class` on CPU labels): then
    nothing here waits for the device. Without it the labels are checked here, a host sync on a GPU.
    """
    if embeddings.dim() != 3 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"need embeddings (N, C, P) and labels (N,), got {embeddings.shape}, {labels.shape}")
    k = labels_per_class(labels) if per_label is None else per_label
    x = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)).permute(2, 0, 1)  # (P, N, C)
    sq = x.pow(2).sum(-1)  # (P, N)
    dist = F.relu(sq[:, :, None] + sq[:, None, :] - 2 * x @ x.transpose(1, 2)).sqrt()  # (P, N, N)
    same = labels[:, None] == labels[None, :]  # (N, N)
    # Per anchor: its K positives, then its N - K negatives, each in index order (a stable sort).
    order = torch.argsort((~same).to(torch.uint8), dim=1, stable=True)  # (N, N)
    parts, n = dist.shape[:2]
    ap = dist.gather(2, order[None, :, :k].expand(parts, n, k)).unsqueeze(-1)  # (P, N, K, 1)
    an = dist.gather(2, order[None, :, k:].expand(parts, n, n - k)).unsqueeze(-2)  # (P, N, 1, N - K)
    hinge = F.relu(ap - an + margin).view(parts, -1)  # (P, N * K * (N - K))
    per_part = hinge.sum(-1) / (hinge > 0).sum(-1).clamp(min=1)  # (P,)

    with torch.no_grad():
        mean_dist = dist.mean(0).fill_diagonal_(float("inf"))  # (N, N)
        accuracy = (labels[mean_dist.argmin(1)] == labels).float().mean()
    return per_part.mean(), accuracy


def part_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, scale: float = SCALE, label_smoothing: float = LABEL_SMOOTHING
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of per-part cosine logits (N, classes, P) against labels (N,), averaged over parts
    (OpenGait's CrossEntropyLoss on BNNeck logits); returns (loss, top-1 accuracy of the part-summed
    logits). Computed in float32 whatever the autocast dtype."""
    if logits.dim() != 3 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, classes, P) and labels (N,), got {logits.shape}, {labels.shape}")
    x = scale * logits.float()  # (N, classes, P)
    parts = x.shape[-1]
    loss = F.cross_entropy(x, labels[:, None].expand(-1, parts), label_smoothing=label_smoothing)
    with torch.no_grad():
        accuracy = (x.sum(-1).argmax(-1) == labels).float().mean()
    return loss, accuracy
