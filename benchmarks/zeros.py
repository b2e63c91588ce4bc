"""How many inputs of each shipped model's layers are exactly zero on MNIST test digits: the work that the
fast paths skip. Prints a markdown table.

    python benchmarks/zeros.py [--data DIR] [--images N]

`zero` is the share of a layer's input values that are 0 for one image (what batch 1 skips); `skipped in
blocks` is the share that is 0 for all 6 images of a block (dense), or for all pixels of a patch of 3 x 2
output pixels (conv2d, which skips so at any batch). (A conv whose row of taps, kernel width x input channels,
is narrower than a vector is multiplied out in full instead: the CNN's conv1.)
"""

from __future__ import annotations

import argparse

import numpy as np

import fastmnist

BLOCK = 6  # rows per block of the dense fast path
PATCH = (3, 2)  # output rows and columns per patch of the conv2d fast path


def zero_in_blocks_dense(x: np.ndarray) -> float:
    rows = len(x) // BLOCK * BLOCK
    return float(np.mean(~(x[:rows].reshape(-1, BLOCK, x.shape[1]) != 0).any(axis=1)))


def zero_in_blocks_conv(x: np.ndarray, layer: dict) -> float:
    """x: (n, h, w, c), a stride-1 "same" conv: each patch's receptive fields, tap by tap, weighted by its
    pixels (patches at the right and bottom edges may be smaller)."""
    k_h, k_w = layer["kernel_size"]
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), ((k_h - 1) // 2, k_h // 2), ((k_w - 1) // 2, k_w // 2), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k_h, k_w), axis=(1, 2)) != 0  # (n, h, w, c, k_h, k_w)
    skipped = 0
    for y in range(0, h, PATCH[0]):
        for x_begin in range(0, w, PATCH[1]):
            patch = windows[:, y:y + PATCH[0], x_begin:x_begin + PATCH[1]]
            pixels = patch.shape[1] * patch.shape[2]
            skipped += pixels * np.sum(~patch.any(axis=(1, 2)))
    return float(skipped / windows.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MNIST folder (default: as fastmnist.load_mnist finds it)")
    parser.add_argument("--images", type=int, default=600)
    args = parser.parse_args()
    _, (test_images, _) = fastmnist.load_mnist(args.data)
    images = test_images[:args.images].astype(np.float32) / 255
    print("| model | layer | input zero | skipped in blocks |\n|---|---|---:|---:|")
    for name in fastmnist.shipped_models():
        model = fastmnist.load(name, num_threads=1)
        outputs = dict(model.activations(images))
        previous = images
        for layer in model.layers:
            if layer["type"] == "dense":
                x = previous.reshape(len(previous), -1)
                print(f"| {name} | {layer['name']} | {np.mean(x == 0):.0%} | {zero_in_blocks_dense(x):.0%} |")
            elif layer["type"] == "conv2d" and layer.get("strides", [1, 1]) == [1, 1] and layer["padding"] == "same":
                x = previous if previous.ndim == 4 else previous[..., None]
                print(f"| {name} | {layer['name']} | {np.mean(x == 0):.0%} | {zero_in_blocks_conv(x, layer):.0%} |")
            previous = outputs[layer["name"]]


if __name__ == "__main__":
    main()
