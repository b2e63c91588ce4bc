"""Keras activations (functions given as ``activation=`` and activation layers) as the format's activations.

An activation in the format is a name, or an object with the name and the parameters that differ from the
format's defaults (docs/FORMAT.md; `fastmnist.layers.ActivationSpec` writes it).
Keras must be importable when these functions are called.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from .errors import ExportError
from .layers import ActivationSpec

Activation = str | dict[str, Any]  # the format's JSON form

# Keras activation function name -> (format name, the format parameters it fixes). Keras 3's hard_sigmoid is
# relu6(x + 3) / 6, i.e. alpha 1/6 and beta 0.5.
_FIXED = {
    "linear": ("linear", {}),
    "relu6": ("relu", {"max_value": 6.0}),
    "hard_sigmoid": ("hard_sigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
    "selu": ("selu", {}),
    "tanh": ("tanh", {}),
    "sigmoid": ("sigmoid", {}),
    "silu": ("silu", {}),
    "softplus": ("softplus", {}),
}
# Keras activation functions with keyword arguments: name -> (format name, {keras keyword: format parameter}).
_WITH_ARGUMENTS = {
    "relu": ("relu", {"negative_slope": "negative_slope", "max_value": "max_value", "threshold": "threshold"}),
    "leaky_relu": ("relu", {"negative_slope": "negative_slope"}),
    "elu": ("elu", {"alpha": "alpha"}),
    "gelu": ("gelu", {"approximate": "approximate"}),
    "softmax": ("softmax", {"axis": "axis"}),
}
SUPPORTED_FUNCTIONS = (*_FIXED, *_WITH_ARGUMENTS, "swish")


def format_activation(name: str, **params: Any) -> Activation:
    """The format's JSON for activation ``name``: the bare name unless a parameter differs from its default."""
    return ActivationSpec(name, tuple(params.items())).to_json()


def from_function(layer: Any, function: Any, rank: int) -> Activation:
    """The format's activation for the Keras activation ``function`` of ``layer`` (output rank ``rank``).

    Accepts the functions of ``keras.activations`` (as strings or objects) and ``functools.partial`` of them
    with keyword arguments, e.g. ``partial(keras.activations.gelu, approximate=True)``.
    """
    import keras

    keywords: dict[str, Any] = {}
    if isinstance(function, functools.partial) and not function.args:
        function, keywords = function.func, dict(function.keywords)
    name = next((n for n in (*_FIXED, *_WITH_ARGUMENTS) if function is keras.activations.get(n)), None)
    if name is None:
        found = getattr(function, "__name__", repr(function))
        raise ExportError(
            f"layer '{layer.name}' ({type(layer).__name__}) uses activation '{found}', which the format does not "
            f"support; supported: the keras.activations {', '.join(SUPPORTED_FUNCTIONS)} (also as "
            "functools.partial with keyword arguments)"
        )
    if name in _FIXED:
        if keywords:
            raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) passes {sorted(keywords)} to "
                              f"activation '{name}', which takes none")
        format_name, params = _FIXED[name]
        return format_activation(format_name, **params)
    format_name, known = _WITH_ARGUMENTS[name]
    unknown = sorted(set(keywords) - set(known))
    if unknown:
        raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) passes {unknown} to activation "
                          f"'{name}', expected only {', '.join(known)}")
    defaults = {"leaky_relu": {"negative_slope": 0.2}}.get(name, {})
    values = {**defaults, **keywords}
    if format_name == "softmax":
        _check_softmax_axis(layer, values.get("axis", -1), rank)
        return "softmax"
    if format_name == "relu":
        return relu(layer, values.get("max_value"), values.get("negative_slope", 0.0), values.get("threshold", 0.0))
    if format_name == "elu":
        return elu(layer, values.get("alpha", 1.0))
    return format_activation("gelu", approximate=bool(values.get("approximate", False)))


def from_layer(layer: Any, rank: int) -> Activation:
    """The format's activation for a Keras activation layer (output rank ``rank``, without the batch axis)."""
    import keras

    kind = type(layer)
    if kind is keras.layers.Activation:
        return from_function(layer, layer.activation, rank)
    if kind is keras.layers.ReLU:
        return relu(layer, layer.max_value, layer.negative_slope, layer.threshold)
    if kind is keras.layers.LeakyReLU:
        return relu(layer, None, layer.negative_slope, 0.0)
    if kind is keras.layers.ELU:
        return elu(layer, layer.alpha)
    if kind is keras.layers.Softmax:
        _check_softmax_axis(layer, layer.axis, rank)
        return "softmax"
    raise TypeError(f"{kind.__name__} is not an activation layer")


ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax")


def relu(layer: Any, max_value: Any, negative_slope: Any, threshold: Any) -> Activation:
    values = {"max_value": None if max_value is None else float(max_value),
              "negative_slope": float(negative_slope), "threshold": float(threshold)}
    # Keras refuses negative values in the ReLU layer; its relu function accepts them but then clips
    # inconsistently (a negative threshold with a max_value zeroes what the threshold let through).
    negative = [key for key, value in values.items() if value is not None and not value >= 0.0]
    if negative or (values["max_value"] is not None and not math.isfinite(values["max_value"])):
        raise ExportError(
            f"layer '{layer.name}' ({type(layer).__name__}) has relu settings {values}, which the format does not "
            "support; expected a finite max_value >= 0 (or None), negative_slope >= 0 and threshold >= 0"
        )
    return format_activation("relu", **values)


def elu(layer: Any, alpha: Any) -> Activation:
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) has alpha={alpha}, expected a finite number")
    return format_activation("elu", alpha=alpha)


def _check_softmax_axis(layer: Any, axis: Any, rank: int) -> None:
    if axis not in (-1, rank, [-1], [rank], (-1,), (rank,)):
        raise ExportError(
            f"layer '{layer.name}' ({type(layer).__name__}) takes the softmax over axis {axis!r}, which the format "
            "does not support; expected the last axis (-1)"
        )
