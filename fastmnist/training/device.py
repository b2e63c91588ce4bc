"""The device a training run uses: TensorFlow's first GPU when it sees one, or the CPU when asked to.

TensorFlow (and Keras on it) places every op on the first visible GPU by itself; all this module chooses is
whether GPUs are visible. That has to be settled before TensorFlow initialises its devices, which it does on
the first op: afterwards the visible devices cannot change.
"""

from __future__ import annotations

import os

import tensorflow as tf

from . import DEVICES

GPU_EXTRA_HINT = "TensorFlow uses an NVIDIA GPU only with CUDA's libraries: pip install 'fastmnist[train-gpu]'"


def select_device(device: str) -> str:
    """Make TensorFlow train on ``device`` (one of ``DEVICES``) and return a description of what it trains on.

    ``auto``: the first GPU if TensorFlow sees one, else the CPU; ``cpu``: the CPU, with every GPU hidden from
    TensorFlow; ``gpu``: the first GPU, and a ValueError if there is none.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device '{device}', expected one of {', '.join(DEVICES)}")
    gpus = tf.config.list_physical_devices("GPU")  # lists without initialising the devices
    if device == "gpu" and not gpus:
        raise ValueError(f"--device gpu: TensorFlow sees no GPU; {GPU_EXTRA_HINT}")
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as error:
            raise ValueError("--device cpu: TensorFlow has already initialised its GPUs in this process; "
                             "choose the device before anything else runs TensorFlow") from error
    return describe_device(hidden_gpus=len(gpus) if device == "cpu" else 0)


def describe_device(hidden_gpus: int = 0) -> str:
    """What TensorFlow trains on: ``GPU <name> (<device>)`` for the first visible GPU, else ``CPU (...)``."""
    visible = tf.config.get_visible_devices("GPU")
    if visible:
        name = tf.config.experimental.get_device_details(visible[0]).get("device_name", "unnamed")
        return f"GPU {name} ({visible[0].name})"
    why = f"{hidden_gpus} GPU(s) hidden by --device cpu" if hidden_gpus else "TensorFlow sees no GPU"
    return f"CPU ({os.cpu_count()} cores; {why})"
