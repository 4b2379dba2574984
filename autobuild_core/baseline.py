"""The simple baseline every ranker claim is measured against: ridge regression on one-hot
architecture features (a GNN that cannot beat it has learned nothing a linear model could not)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV

from .metrics import spearman


def ridge_predict(space, train_archs: Sequence, y_train, test_archs: Sequence) -> np.ndarray:
    """Fit ridge regression (alpha by cross-validation) on one-hot features and predict.

    Args:
        space: the search space (its ``one_hot`` gives the features).
        train_archs: training architectures.
        y_train: their targets.
        test_archs: architectures to predict.
    """
    x_tr = np.stack([space.one_hot(a) for a in train_archs])
    x_te = np.stack([space.one_hot(a) for a in test_archs])
    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_tr, np.asarray(y_train, dtype=float))
    return model.predict(x_te)


def ridge_spearman(space, train_archs: Sequence, y_train, test_archs: Sequence, y_test) -> float:
    """Spearman correlation of :func:`ridge_predict`'s predictions with ``y_test``.

    Args:
        space: the search space.
        train_archs: training architectures.
        y_train: their targets.
        test_archs: held-out architectures.
        y_test: their targets.
    """
    return spearman(ridge_predict(space, train_archs, y_train, test_archs), y_test)
