"""A multiple-instance head over true patch features: each film a bag of its tissue tiles' feature vectors.

Why: on mini-MIAS a pooling head over the patch backbone's whole-film feature map scores at chance, since
a cell of that map is not a patch feature (its receptive field spans its neighbours, never the zero padding
a lone patch has), while the same patch model on each tile on its own keeps the lesion signal. Here the
frozen patch backbone is run on each tile (``explain.lesion_map.tile_features``: the tiles ``slide`` cuts),
and a gated attention-MIL head (Ilse et al. 2018; ``nets.pooling.GatedAttentionPool`` over the bag) is
trained per film label: it can weight the few tiles that hold a lesion instead of the hottest one only.

The recipe (``MilRecipe``) was fixed before any mini-MIAS figure of this head was seen (on synthetic
bags only): instance features standardised with the training instances' mean and std, a linear embedding
to 128 with ReLU, the gated attention of width 128, a linear classifier starting at zero; Adam, lr 5e-4,
weight decay 1e-4, 8 bags per step (padded, the attention masked to each bag's instances), 100 epochs, BCE
with pos_weight = negatives / positives, seed 0. The baseline beside it: the mean of a bag's features and
``map_pooling.standardised_logistic`` (C = 1), on the same bags and folds.

Fold discipline (``out_of_fold_scores``): for outer fold k every bag comes from fold k's patch model only;
the head is fitted on the other folds' films and scores fold k's, so no film is scored by a backbone or a
head that saw it. The fold-k backbone was trained on the other folds' lesion patches, so the head's
training bags are in-sample for the backbone (as in end-to-end training); the scored fold is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mammo_insight.nets.pooling import ATTENTION_HIDDEN, GatedAttentionPool
from mammo_insight.runs.map_pooling import standardised_logistic


@dataclass(frozen=True)
class MilRecipe:
    """The attention-MIL head's fixed hyper-parameters (see the module docstring for why fixed)."""

    embed: int = 128
    epochs: int = 100
    batch_bags: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0


class AttentionMilHead(nn.Module):
    """(B, n, n_features) padded bags and their (B, n) mask -> B logits: standardise, embed, gated
    attention over each bag's real instances, linear."""

    def __init__(self, n_features: int, embed: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.embed = nn.Sequential(nn.Linear(n_features, embed), nn.ReLU())
        self.pool = GatedAttentionPool(embed, ATTENTION_HIDDEN)
        self.classify = nn.Linear(embed, 1)
        # Zero at the start: the attention then gets no gradient until the classifier has found a direction
        # in the pooled features, and follows it; from a random classifier it can learn, before any signal,
        # to look away from the few instances that carry the label (seen on synthetic bags).
        nn.init.zeros_(self.classify.weight)

    def _cells(self, bags: torch.Tensor) -> torch.Tensor:
        """The embedded instances as the (B, C, n, 1) feature map the attention pool reads."""
        return self.embed((bags - self.mean) / self.std).transpose(1, 2)[..., None]

    def weights(self, bag: torch.Tensor) -> torch.Tensor:
        """(n,) attention of each instance of one (n, n_features) bag, summing to 1."""
        return self.pool.weights(self._cells(bag[None])).view(-1)

    def forward(self, bags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(self._cells(bags), mask[..., None])).squeeze(-1)


def _padded(bags: Sequence[np.ndarray], n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n_max, C) bags padded with zeros and their (B, n_max) mask of real instances; a film without a
    tissue tile is one all-zero instance."""
    sizes = [max(len(b), 1) for b in bags]
    x = np.zeros((len(bags), max(sizes), n_features), np.float32)
    mask = np.zeros((len(bags), max(sizes)), bool)
    for i, (bag, size) in enumerate(zip(bags, sizes, strict=True)):
        x[i, : len(bag)] = bag
        mask[i, :size] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def fit_attention_mil(
    bags: Sequence[np.ndarray], labels: np.ndarray, recipe: MilRecipe = MilRecipe()
) -> AttentionMilHead:
    """The attention-MIL head fitted on ``bags`` (each (n_i, C)) and their 0/1 film labels."""
    n_features = next(b.shape[1] for b in bags if len(b))
    instances = np.concatenate([b for b in bags if len(b)]).astype(np.float64)
    mean, std = instances.mean(axis=0), instances.std(axis=0) + 1e-6
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        head = AttentionMilHead(n_features, recipe.embed, mean, std)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    n_pos = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - n_pos) / max(n_pos, 1.0)))
    optimiser = torch.optim.Adam(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(recipe.seed)
    head.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(bags), generator=generator).tolist()
        for start in range(0, len(order), recipe.batch_bags):
            idx = order[start : start + recipe.batch_bags]
            x, mask = _padded([bags[i] for i in idx], n_features)
            loss = loss_fn(head(x, mask), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return head.eval()


@torch.no_grad()
def score_bags(head: AttentionMilHead, bags: Sequence[np.ndarray], batch_bags: int = 64) -> np.ndarray:
    """Probability per bag."""
    n_features = head.embed[0].in_features
    out = [
        torch.sigmoid(head(*_padded(bags[start : start + batch_bags], n_features))).numpy()
        for start in range(0, len(bags), batch_bags)
    ]
    return np.concatenate(out).astype(np.float64)


def _bag_means(bags: Sequence[np.ndarray]) -> np.ndarray:
    n_features = next(b.shape[1] for b in bags if len(b))
    return np.stack([b.mean(axis=0) if len(b) else np.zeros(n_features) for b in bags])


def out_of_fold_scores(
    bags_of_fold: Callable[[int], Sequence[np.ndarray]],
    labels: np.ndarray,
    folds: np.ndarray,
    recipe: MilRecipe = MilRecipe(),
) -> dict[str, np.ndarray]:
    """Per film, ``attention_mil`` and ``mean_logistic`` probabilities, each film scored from its own fold.

    ``bags_of_fold(k)`` gives every film's bag (in ``labels``' order) from fold k's patch model only; the
    heads are fitted on the films outside fold k and score fold k's.
    """
    labels = np.asarray(labels, dtype=np.float64)
    folds = np.asarray(folds)
    scores = {name: np.full(len(labels), np.nan) for name in ("attention_mil", "mean_logistic")}
    for k in np.unique(folds):
        bags = bags_of_fold(int(k))
        held = folds == k
        train = np.flatnonzero(~held)
        head = fit_attention_mil([bags[i] for i in train], labels[train], recipe)
        scores["attention_mil"][held] = score_bags(head, [bags[i] for i in np.flatnonzero(held)])
        means = _bag_means(bags)
        logistic = standardised_logistic().fit(means[train], labels[train].astype(int))
        scores["mean_logistic"][held] = logistic.predict_proba(means[held])[:, 1]
    return scores
