"""The real small model of the adaptive-sweep benchmark: an SVC on scikit-learn's ``load_digits``.

Not a benchmark itself. The digits (1797 images of 8x8 pixels, 10 classes, shipped with
scikit-learn: no download) are split once, stratified and seeded, into a training pool of
:data:`MAX_ROWS` rows and a validation set of the other 582. A trial trains
``sklearn.svm.SVC`` with six hyper-parameters (:data:`SVC_SPACE`: ``C`` and ``gamma`` on log
ranges, ``kernel`` and ``scaler`` categorical, ``degree`` an int, ``coef0`` a float) on the first
``budget`` rows of the pool and reports its validation error (1 - accuracy; minimised). The
budget is the number of training rows (successive halving's ``budget``); the full budget is the
whole pool. The scalers are fitted once on the whole pool (unlabelled statistics only).
One fit at the full budget takes about 0.05 s; results are memoised per (trial, budget).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The training pool; also the full budget (rows).
MAX_ROWS = 1215
SVC_SPACE: dict[str, Any] = {
    "C": {"distribution": "float", "low": 1e-2, "high": 1e4, "log": True},
    "gamma": {"distribution": "float", "low": 1e-5, "high": 1.0, "log": True},
    "kernel": ["rbf", "poly", "sigmoid"],
    "degree": {"distribution": "int", "low": 2, "high": 5},
    "coef0": {"distribution": "float", "low": 0.0, "high": 1.0},
    "scaler": ["standard", "minmax", "none"],
}


class DigitsSvc:
    """The SVC problem: ``error(trial, budget)``, memoised, and how many fits it really ran."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        try:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split
            from sklearn.preprocessing import MinMaxScaler, StandardScaler
        except ImportError as err:  # the benchmark cannot measure without it
            raise SystemExit(f"scikit-learn is needed for the real-model problem: {err}") from err

        features, labels = load_digits(return_X_y=True)
        x_pool, x_val, self.y_pool, self.y_val = train_test_split(
            features, labels, train_size=max_rows, random_state=0, stratify=labels
        )
        self.data = {"none": (x_pool, x_val)}
        for name, scaler in (("standard", StandardScaler()), ("minmax", MinMaxScaler())):
            scaler.fit(x_pool)
            self.data[name] = (scaler.transform(x_pool), scaler.transform(x_val))
        self.memo: dict[tuple[str, float], float] = {}
        self.fits = 0

    def error(self, trial: Mapping[str, Any], budget: float = MAX_ROWS) -> float:
        """Validation error of ``trial`` trained on the first ``budget`` rows of the pool."""
        key = (str(trial["trial_id"]), float(budget))
        if key not in self.memo:
            self.memo[key] = self._fit(trial["hparams"], int(budget))
        return self.memo[key]

    def _fit(self, hparams: Mapping[str, Any], rows: int) -> float:
        from sklearn.svm import SVC

        x_pool, x_val = self.data[str(hparams["scaler"])]
        model = SVC(
            C=float(hparams["C"]),
            gamma=float(hparams["gamma"]),
            kernel=str(hparams["kernel"]),
            degree=int(hparams["degree"]),
            coef0=float(hparams["coef0"]),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_pool[:rows], self.y_pool[:rows])
            accuracy = float(model.score(x_val, self.y_val))
        self.fits += 1
        return 1.0 - accuracy
