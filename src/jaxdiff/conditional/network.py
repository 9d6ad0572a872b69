r"""Learned class-conditional scores: one network, a conditional and an unconditional branch.

A model built with `n_classes` (`jaxdiff.nn.MLP(..., n_classes=K)`, `jaxdiff.nn.UNet(...,
n_classes=K)`) takes a class label next to the noise level; label `K` (or `None`) is the
null label. Training replaces each example's label by the null label with probability
`label_dropout` (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022,
arXiv:2207.12598), so one network learns both $s(t, x \mid y)$ and $s(t, x)$, the two
branches classifier-free guidance needs. `train(score, data, process, labels=...,
label_dropout=0.1)` does this with any loss: `LabelledLoss` applies the loss example by
example with each example's branch.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from .._checks import as_float_array, is_concrete
from ..losses import AbstractLoss
from ..network_score import AbstractParametrisation, EDMParam, NetworkScore
from ..processes import AbstractProcess
from ..scores import AbstractScore
from ._checks import check_label
from .guidance import AbstractConditionalScore


class _WithLabel(eqx.Module):
    """`model(c, x, label)` with the label bound: a plain `model(c, x)` for `NetworkScore`."""

    model: eqx.Module
    label: Int[Array, ""]

    def __call__(self, c, x):
        return self.model(c, x, self.label)

    @property
    def dim(self):  # the CLI and samplers read a vector model's size
        return self.model.dim


class ConditionalNetworkScore(AbstractScore, AbstractConditionalScore):
    """A network score with class labels. Called as `score(t, x)` it is the unconditional
    branch; `conditional(y)` and `unconditional()` are `NetworkScore`s."""

    model: eqx.Module
    process: AbstractProcess
    parametrisation: AbstractParametrisation
    n_labels: int = eqx.field(static=True)
    check_times: bool = eqx.field(static=True)

    def __init__(
        self,
        model,
        process: AbstractProcess,
        parametrisation: AbstractParametrisation | None = None,
        *, n_classes: int | None = None, check_times: bool = True):
        """**Arguments:** `model`, a network `model(c, x, label)` (label `n_classes` or `None`:
        the null label), e.g. `jaxdiff.nn.MLP(2, n_classes=8, key=k)`; `process`;
        `parametrisation` (default `EDMParam()`, as for `NetworkScore`, its `sigma_data` taken
        from the data in `train`); `n_classes`, needed only for a model other
        than `MLP`/`UNet`."""
        from ..nn import MLP, UNet

        n = model.n_classes if n_classes is None and isinstance(model, (MLP, UNet)) else n_classes
        if not isinstance(n, int) or n < 1:
            raise ValueError(
                f"`model` must take class labels: build it with `n_classes=` (e.g. jaxdiff.nn.UNet(1, "
                f"n_classes=10, key=...)), got {type(model).__name__} without classes"
            )
        self.model = model
        self.process = process
        self.parametrisation = EDMParam() if parametrisation is None else parametrisation
        self.n_labels = n
        self.check_times = bool(check_times)

    @property
    def n_classes(self) -> int:
        return self.n_labels

    def _branch(self, label) -> NetworkScore:
        return NetworkScore(_WithLabel(self.model, label), self.process, self.parametrisation,
                            check_times=self.check_times)  # fmt: skip

    def conditional(self, y) -> NetworkScore:
        return self._branch(check_label("y", y, self.n_labels))

    def unconditional(self) -> NetworkScore:
        return self._branch(jnp.asarray(self.n_labels, jnp.int32))

    def without_time_checks(self) -> ConditionalNetworkScore:
        return ConditionalNetworkScore(
            self.model, self.process, self.parametrisation, n_classes=self.n_labels, check_times=False
        )

    def denoise(self, t, x):
        return self.unconditional().denoise(t, x)

    def __call__(self, t, x):
        return self.unconditional()(t, x)


class LabelledLoss(AbstractLoss):
    """`base` applied to each example with its own branch: the conditional score of its label,
    or with probability `label_dropout` the unconditional one.

    The batch `x0` carries the label in its last column: shape `(n, prod(event_shape) + 1)`
    (`pack_labelled` builds such data)."""

    base: AbstractLoss
    label_dropout: float = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)

    def terms(self, score, process, x0, *, key):
        if not isinstance(score, ConditionalNetworkScore):
            raise ValueError(f"`LabelledLoss` trains a ConditionalNetworkScore, got {type(score).__name__}")
        n = x0.shape[0]
        xs = x0[:, :-1].reshape(n, *self.event_shape)
        labels = jnp.round(x0[:, -1]).astype(jnp.int32)

        def one(i, x, y):
            k = jax.random.fold_in(key, i)
            drop = jax.random.bernoulli(jax.random.fold_in(k, 1), self.label_dropout)
            y = jnp.where(drop, score.n_labels, y)
            return self.base.terms(score._branch(y), process, x[None], key=jax.random.fold_in(k, 0))[0]

        return jax.vmap(one)(jnp.arange(n), xs, labels)


def pack_labelled(score, data, labels, loss: AbstractLoss, label_dropout) -> tuple[Array, LabelledLoss]:
    """Data with the labels as a last column, and the `LabelledLoss` that reads them."""
    if not isinstance(score, ConditionalNetworkScore):
        raise ValueError(
            "`labels=` trains a class-conditional score: pass a ConditionalNetworkScore (a model built with "
            f"`n_classes=`), got {type(score).__name__}"
        )
    if not (isinstance(label_dropout, (int, float)) and 0 <= label_dropout < 1):
        raise ValueError(f"`label_dropout` must be in [0, 1), got {label_dropout!r}")
    if label_dropout == 0:
        raise ValueError(
            "`label_dropout=0` trains no unconditional branch: guidance needs one (use e.g. 0.1)"
        )
    data = as_float_array("data", data)
    if not is_concrete(labels):
        raise ValueError("`labels` must be concrete")
    lab = np.asarray(labels)
    if lab.shape != (data.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"`labels` must be integers of shape ({data.shape[0]},), one per example, got "
                         f"{lab.dtype} {lab.shape}")  # fmt: skip
    if lab.min() < 0 or lab.max() >= score.n_classes:
        raise ValueError(f"`labels` must lie in 0..{score.n_classes - 1}, got {lab.min()}..{lab.max()}")
    event = tuple(data.shape[1:])
    packed = jnp.concatenate([data.reshape(data.shape[0], math.prod(event)),
                              jnp.asarray(lab, data.dtype)[:, None]], axis=1)  # fmt: skip
    return packed, LabelledLoss(loss, float(label_dropout), event)
