"""A Keras model as the chain of layers it applies, from its input to its output.

The format is a flat list of layers, so only models that are a chain can be exported: a Sequential, or a
Functional model with one input and one output in which every layer takes one tensor and every tensor feeds
one layer. Models nested inside (a Sequential used as a layer) are expanded in place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .errors import ExportError


def layer_chain(model: Any) -> list[Any]:
    """The layers ``model`` applies, in order, nested models expanded (InputLayers left out)."""
    import keras

    if not isinstance(model, keras.Model):
        raise ExportError(f"'{getattr(model, 'name', model)}' is a {type(model).__name__}, expected a keras.Model "
                          "(Sequential or Functional)")
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_nodes_by_depth"):
        raise ExportError(f"model '{model.name}' is a subclassed keras.Model ({type(model).__name__}), whose layers "
                          "are only known to its Python call(); expected a Sequential or Functional model")
    if not model.built or not model.inputs:
        raise ExportError(f"model '{model.name}' has no input shape; start it with keras.Input((28, 28, 1))")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs, "
                          "expected one of each")
    layers = list(model.layers) if isinstance(model, keras.Sequential) else _functional_chain(model)
    chain = []
    for layer in layers:
        if isinstance(layer, keras.Model):
            chain.extend(layer_chain(layer))
        elif type(layer) is not keras.layers.InputLayer:
            chain.append(layer)
    return chain


def _functional_chain(model: Any) -> list[Any]:
    import keras

    # Keras has no public API for a Functional model's graph; these are the node attributes Keras 3 builds it from.
    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]
    uses = Counter(id(node.operation) for node in nodes)
    consumers: dict[int, list[Any]] = {}
    for node in nodes:
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node.operation)
    for node in nodes:
        layer = node.operation
        if not isinstance(layer, keras.layers.Layer):
            raise ExportError(
                f"model '{model.name}' applies the operation '{layer.name}' ({type(layer).__name__}) outside any "
                "layer; the format is made of Keras layers: write it as one (x / 255 as keras.layers.Rescaling)"
            )
        if uses[id(layer)] > 1:
            raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) is applied {uses[id(layer)]} times in "
                              f"model '{model.name}'; the format needs each layer used once, in a chain")
        if len(node.input_tensors) > 1:
            raise ExportError(
                f"model '{model.name}' is not a chain of layers: layer '{layer.name}' ({type(layer).__name__}) takes "
                f"{len(node.input_tensors)} inputs; the format supports one path from the input to the output"
            )
        for tensor in node.output_tensors:
            fed = consumers.get(id(tensor), [])
            if len(fed) > 1:
                names = ", ".join(f"'{other.name}'" for other in fed)
                raise ExportError(
                    f"model '{model.name}' branches: the output of layer '{layer.name}' ({type(layer).__name__}) "
                    f"feeds {len(fed)} layers ({names}); the format supports one path from the input to the output"
                )
    # With one input per layer and one use per tensor, walking back from the output visits every layer.
    chain, tensor = [], model.outputs[0]
    while True:
        layer = tensor._keras_history.operation
        chain.append(layer)
        node = layer._inbound_nodes[tensor._keras_history.node_index]
        if not node.input_tensors:
            break
        tensor = node.input_tensors[0]
    return chain[::-1]
