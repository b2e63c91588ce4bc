"""`python -m fastmnist.gui [MODEL]`: start the app, optionally on a shipped model's name or a weights file."""

import argparse
import sys

from .app import main

parser = argparse.ArgumentParser(prog="python -m fastmnist.gui", description="Draw a digit and watch a fastmnist model read it.")
parser.add_argument("model", nargs="?", help="a shipped model's name or a weights file (.npz); default: the best shipped")
sys.exit(main(parser.parse_args().model))
