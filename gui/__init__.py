"""The fastmnist desktop app: draw a digit and watch a network classify it (PySide6)."""
