"""The estimator contract every repair follows (scikit-learn style) and the registry by name.

* ``__init__`` stores hyperparameters only;
* ``fit(...)`` validates its input, sets the learned ``*_`` attributes, returns ``self``;
* ``apply(...)`` is the float reference, pure;
* ``integer_params(...)`` gives the parameters of the C shim, and ``apply_int(...)``
  computes exactly the integers that shim computes (``repair.fixedpoint``);
* ``to_dict()`` / ``from_dict()`` round-trip hyperparameters and fitted state as JSON.
"""

from __future__ import annotations

import inspect

import numpy as np

from ...errors import DataError

REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a repair available by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


class Repair:
    name = "repair"
    #: names of the attributes ``fit`` learns
    fitted_attributes: tuple[str, ...] = ()

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in inspect.signature(type(self).__init__).parameters if p != "self"}

    @property
    def is_fitted(self) -> bool:
        return all(hasattr(self, a) for a in self.fitted_attributes)

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    def to_dict(self) -> dict:
        self.check_fitted()
        fitted = {a: _plain(getattr(self, a)) for a in self.fitted_attributes}
        return {"repair": self.name, "params": _plain(self.get_params()), "fitted": fitted}

    @classmethod
    def from_dict(cls, d: dict) -> "Repair":
        obj = cls(**d.get("params", {}))
        for a in cls.fitted_attributes:
            setattr(obj, a, d["fitted"][a])
        return obj


def from_dict(d: dict) -> Repair:
    """Rebuild any registered repair from its ``to_dict`` form."""
    try:
        cls = REGISTRY[d["repair"]]
    except KeyError:
        raise DataError(f"unknown repair {d.get('repair')!r} in plan; known: {', '.join(sorted(REGISTRY))}") from None
    return cls.from_dict(d)


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def check_rate(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0.0 < float(value) < 1.0):
        raise DataError(f"{name} {value} must be a rate strictly between 0 and 1 (e.g. 0.1 for 10%)")
    return float(value)


def check_finite_array(name: str, a, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimension(s), got shape {list(a.shape)}")
    if a.size == 0:
        raise DataError(f"{name} is empty: nothing to fit on")
    bad = ~np.isfinite(a)
    if bad.any():
        raise DataError(f"{name} has {int(bad.sum())} NaN/Inf value(s) (first at index {int(np.argmax(bad.ravel()))}); "
                        "remove them before fitting")
    return a
