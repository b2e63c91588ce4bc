"""The fastmnist desktop app, installed as `fastmnist.gui`: draw a digit and watch a network classify it (PySide6)."""
