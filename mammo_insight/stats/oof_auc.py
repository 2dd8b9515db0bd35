"""Out-of-fold AUC of one column's levels alone, for the real labels and every permutation at once.

The leakage audit (stats.leakage) scores each column by the cancer rates of its levels counted among the
other folds' women; this module holds that computation: the folds' sparse pattern matrices and the tie-aware
pair counting, vectorised over the permuted label vectors that give the chance band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

PRIOR_WEIGHT = 10.0  # pseudo-count pulling rare levels toward the overall rate (out-of-fold scoring)


def _auc_parts(score: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(concordant pair weight, all pair weight) per row, for groups of breasts sharing one score (columns;
    ties count one half), from the groups' positive and negative counts. Rows are scored at once."""
    n_rows, m = score.shape
    order = np.argsort(score, axis=1, kind="stable")
    s = np.take_along_axis(score, order, 1)
    new = np.ones(s.shape, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    tie_group = (np.cumsum(new, axis=1) - 1 + np.arange(n_rows)[:, None] * m).ravel()
    pos_g, neg_g = (
        np.bincount(tie_group, np.take_along_axis(w, order, 1).ravel(), n_rows * m).reshape(n_rows, m)
        for w in (pos, neg)
    )
    below = np.cumsum(neg_g, axis=1) - neg_g
    return (pos_g * (below + 0.5 * neg_g)).sum(axis=1), pos_g.sum(axis=1) * neg_g.sum(axis=1)


class _OutOfFold:
    """Out-of-fold AUC of one column, for the real labels and every permutation at once.

    In each fold the levels' cancer rates are counted among the other folds' women (shrunk toward their
    overall rate by ``PRIOR_WEIGHT`` pseudo-images), each held-out breast scored by its images' mean rate,
    and the AUC counts the pairs of a cancer and a non-cancer of the same held-out fold. Pooling the
    folds' scores instead would pull an uninformative column below 0.5 (a held-out cancer lowers its own
    level's rate in the other folds). Breasts whose images hold the same count of each level ('patterns')
    share a score, so the work is per pattern, not per breast.
    """

    def __init__(self, codes: np.ndarray, breast: np.ndarray, n_breasts: int, fold: np.ndarray) -> None:
        k = int(codes.max()) + 1
        counts = np.bincount(breast * k + codes, minlength=n_breasts * k).reshape(n_breasts, k)
        dims = counts.max(axis=0) + 1
        if np.prod(dims.astype(float)) < 2**62:  # one integer per row: hashing beats sorting rows
            of_breast = pd.factorize(np.ravel_multi_index(counts.T, dims))[0]
            patterns = counts[np.unique(of_breast, return_index=True)[1]]
        else:
            patterns, of_breast = np.unique(counts, axis=0, return_inverse=True)
            of_breast = of_breast.ravel()
        n_pat = len(patterns)
        self.patterns = patterns.astype(float)
        self.n_images = np.maximum(self.patterns.sum(axis=1), 1.0)
        # pattern x breast, one matrix per fold's held-out breasts: times the labels, positives per pattern.
        # A fold's training counts are all minus its own, and all is the sum of the folds' (counts of 0/1
        # labels: exact), so the labels are read once per column, not once per side and fold
        ones = np.ones(n_breasts, dtype=np.float32)  # the labels' type: a product never copies them
        self.held_out = []
        for f in np.unique(fold):
            rows, cols = of_breast[fold == f], np.flatnonzero(fold == f)
            self.held_out.append(sparse.csr_matrix((ones[: len(rows)], (rows, cols)), (n_pat, n_breasts)))

    def aucs(self, labels: np.ndarray) -> np.ndarray:
        """AUC per column of ``labels`` (breasts x label vectors, 0/1, C-ordered float32)."""
        num, den = np.zeros(labels.shape[1]), np.zeros(labels.shape[1])
        pos_tests = [to_test @ labels for to_test in self.held_out]
        n_tests = [np.asarray(to_test.sum(axis=1)).ravel() for to_test in self.held_out]
        pos_all, n_all = sum(pos_tests), sum(n_tests)
        for pos_test, n_te in zip(pos_tests, n_tests, strict=True):
            n_tr = n_all - n_te
            present = np.flatnonzero(n_te)
            if not present.size:
                continue
            pos_img = (pos_all - pos_test).T @ self.patterns  # positive images per level, per label vector
            all_img = n_tr @ self.patterns
            prior = pos_img.sum(axis=1, keepdims=True) / max(all_img.sum(), 1.0)
            rate = (pos_img + PRIOR_WEIGHT * prior) / (all_img + PRIOR_WEIGHT)
            # rounded: breasts of one level mix (1 of A, 2 of A ...) tie exactly, not an ulp apart
            score = np.round((rate @ self.patterns[present].T) / self.n_images[present], 12)
            pos_te = pos_test.T[:, present]
            a, b = _auc_parts(score, pos_te, n_te[present] - pos_te)
            num += a
            den += b
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den


def auc_with_null(
    codes: np.ndarray, breast: np.ndarray, labels: np.ndarray, fold: np.ndarray
) -> tuple[float, float, float]:
    """(out-of-fold AUC, null 2.5 %, null 97.5 %) of one column's level codes.

    ``labels``: breasts x (the breast labels, then their permutations), C-ordered float32; ``fold`` per breast.
    """
    aucs = _OutOfFold(codes, breast, labels.shape[0], fold).aucs(labels)
    low, high = np.nanpercentile(aucs[1:], [2.5, 97.5]) if len(aucs) > 1 else (np.nan, np.nan)
    return float(aucs[0]), float(low), float(high)
