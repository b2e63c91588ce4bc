"""Keras activations (functions given as ``activation=`` and activation layers) as the format's activations.

An activation in the format is a name, or an object with the name and the parameters that differ from the
format's defaults (docs/FORMAT.md; `fastmnist.layers.ActivationSpec` writes it).
Keras must be importable when these functions are called.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

from ._fold import LOG_SOFTMAX  # not a format activation: at the output, `_fold` replaces it by a softmax
from .errors import ExportError
from .layers import ActivationSpec

Activation = str | dict[str, Any]  # the format's JSON form, or LOG_SOFTMAX until the output is finished

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
# Keras activation functions with keyword arguments -> the keywords the format can express.
_WITH_ARGUMENTS = {
    "relu": ("negative_slope", "max_value", "threshold"),
    "leaky_relu": ("negative_slope",),
    "elu": ("alpha",),
    "gelu": ("approximate",),
    "softmax": ("axis",),
    "log_softmax": ("axis",),
}
SUPPORTED_FUNCTIONS = (*_FIXED, *_WITH_ARGUMENTS, "swish")
ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax")


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
            f"layer '{layer.name}' uses activation '{found}' (layer type {type(layer).__name__}), which the format "
            f"does not support; supported: the keras.activations {', '.join(SUPPORTED_FUNCTIONS)} (also as "
            "functools.partial with keyword arguments)"
        )
    known = _WITH_ARGUMENTS.get(name, ())
    unknown = sorted(set(keywords) - set(known))
    if unknown:
        raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) passes {unknown} to activation "
                          f"'{name}', expected {', '.join(known) if known else 'none'}")
    if name in _FIXED:
        format_name, params = _FIXED[name]
        return format_activation(format_name, **params)
    # Keras' own defaults (leaky_relu's slope is 0.2, ...) for the keywords not given.
    values = {key: parameter.default for key, parameter in inspect.signature(function).parameters.items()
              if key in known}
    values.update(keywords)
    if name in ("softmax", LOG_SOFTMAX):
        _check_softmax_axis(layer, values["axis"], rank)
        return name
    if name == "relu":
        return relu(layer, values["max_value"], values["negative_slope"], values["threshold"])
    if name == "leaky_relu":
        return relu(layer, None, values["negative_slope"], 0.0)
    if name == "elu":
        return elu(layer, values["alpha"])
    return format_activation("gelu", approximate=bool(values["approximate"]))


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


def relu(layer: Any, max_value: Any, negative_slope: Any, threshold: Any) -> Activation:
    values = {"max_value": None if max_value is None else float(max_value),
              "negative_slope": float(negative_slope), "threshold": float(threshold)}
    # Keras refuses negative values in the ReLU layer; its relu function accepts them but then clips
    # inconsistently (a negative threshold with a max_value zeroes what the threshold let through).
    negative = [key for key, value in values.items() if value is not None and not value >= 0.0]
    cap = values["max_value"]
    if negative or (cap is not None and not (math.isfinite(cap) and cap >= values["threshold"])):
        raise ExportError(
            f"layer '{layer.name}' ({type(layer).__name__}) has relu settings {values}, which the format does not "
            "support; expected negative_slope >= 0, threshold >= 0 and a finite max_value >= threshold (or None)"
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
