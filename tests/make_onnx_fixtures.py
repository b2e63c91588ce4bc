"""Make the ONNX fixtures of tests/test_onnx_zoo.py: small PyTorch models trained briefly on MNIST, each exported
by both torch exporters, with PyTorch's own probabilities on the 10,000 test digits.

    python tests/make_onnx_fixtures.py [--data DIR]

writes tests/fixtures/onnx/MODEL.torchscript.onnx (torch.onnx.export(dynamo=False)), MODEL.dynamo.onnx
(dynamo=True) and MODEL.torch.npz ("probabilities": (10000, 10) float32). Every model is trained with
transforms.Normalize((0.1307,), (0.3081,)) on its input, which the tests pass to import_onnx as mean and std.
Runs in about a minute on one core; seeds are fixed, so a rerun writes the same models.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastmnist import load_mnist

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "onnx"
MEAN, STD = 0.1307, 0.3081
BATCH_SIZE = 64


class MnistNet(nn.Module):
    """The network of PyTorch's MNIST example, layer for layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


class LeNet5(nn.Module):
    """LeNet-5: tanh, average pooling, a padded first convolution, three dense layers; ends in logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


class Mlp(nn.Module):
    """784 -> 128 -> 10 with ReLU, ending in logits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class BatchNormCnn(nn.Module):
    """Convolutions without bias, each followed by BatchNorm; the first is zero-padded; ends in softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 6 * 6, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


# name -> (builder, training steps, TorchScript exporter opset, output kind: "log_softmax", "logits", "softmax")
MODELS = {
    "mnist_net": (MnistNet, 150, 11, "log_softmax"),
    "lenet5": (LeNet5, 300, 13, "logits"),
    "mlp": (Mlp, 300, 11, "logits"),
    "bn_cnn": (BatchNormCnn, 200, 17, "softmax"),
}


def normalised(images: np.ndarray) -> torch.Tensor:
    """(n, 28, 28) uint8 -> (n, 1, 28, 28) float32, as transforms.ToTensor() then Normalize((MEAN,), (STD,))."""
    return (torch.from_numpy(images).float()[:, None] / 255.0 - MEAN) / STD


def train(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(x_train))[:steps * BATCH_SIZE]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        batch = order[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]
        scores = model(normalised(x_train[batch]))
        # Every model is trained on log-probabilities, whatever it outputs.
        log_probabilities = torch.log(scores.clamp_min(1e-12)) if isinstance(model, BatchNormCnn) else \
            F.log_softmax(scores, dim=1)
        loss = F.nll_loss(log_probabilities, torch.from_numpy(y_train[batch]).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def probabilities(model: nn.Module, images: np.ndarray, kind: str) -> np.ndarray:
    with torch.no_grad():
        scores = torch.cat([model(normalised(images[i:i + 1000])) for i in range(0, len(images), 1000)])
    if kind == "log_softmax":
        scores = scores.exp()
    elif kind == "logits":
        scores = scores.softmax(dim=1)
    return scores.numpy().astype(np.float32)


def export(model: nn.Module, path: Path, dynamo: bool, opset: int) -> None:
    example = torch.zeros(1, 1, 28, 28)
    options = {"input_names": ["image"], "output_names": ["scores"], "external_data": False}
    if dynamo:
        options["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch")}}
    else:
        options.update(opset_version=opset, dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo, verbose=False, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder with the four MNIST IDX files (default: $FASTMNIST_DATA, ...)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for seed, (name, (builder, steps, opset, kind)) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        model = train(builder(), x_train, y_train, steps, seed)
        torch_probabilities = probabilities(model, x_test, kind)
        accuracy = float(np.mean(torch_probabilities.argmax(axis=1) == y_test))
        np.savez_compressed(FIXTURES / f"{name}.torch.npz", probabilities=torch_probabilities)
        for exporter, dynamo in (("torchscript", False), ("dynamo", True)):
            export(model, FIXTURES / f"{name}.{exporter}.onnx", dynamo, opset)
        print(f"{name}: test accuracy {accuracy:.2%} after {steps} steps")


if __name__ == "__main__":
    main()
