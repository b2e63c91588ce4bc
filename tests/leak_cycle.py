"""Load, predict and free models over and over: the workload for a leak check of the C layer.

    PYTHONMALLOC=malloc valgrind --leak-check=full --errors-for-leak-kinds=definite python tests/leak_cycle.py

Exercises every op kind, both thread modes, activations() (the tap buffers) and refused files.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import fastmnist
from random_models import CNN_LAYERS, MLP_BN_ELU_LAYERS, random_images, write_model


def main(cycles: int = 5) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_model(Path(tmp, "cnn.npz"), CNN_LAYERS), write_model(Path(tmp, "mlp.npz"), MLP_BN_ELU_LAYERS, (784,))]
        bad = Path(tmp, "bad.npz")
        bad.write_bytes(paths[1].read_bytes()[:5000])
        images = random_images(9)
        for _ in range(cycles):
            for path in paths:
                for threads in (1, 2):
                    model = fastmnist.load(path, num_threads=threads)
                    model.predict_proba(images[:1])
                    model.predict_proba(images)
                    model.activations(images[:2])
                    del model
            try:
                fastmnist.load(bad)
            except fastmnist.WeightsFormatError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
