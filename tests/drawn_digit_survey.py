"""Draw every digit many times on the app's canvas, as people draw, and count what the app reads.

    QT_QPA_PLATFORM=offscreen python tests/drawn_digit_survey.py --per-digit 30 [--sloppy] [--model cnn]

Each sample is one of the usual ways of writing the digit or a common alternative (a flagged 1, a crossed 7,
an open 4, ...), at a random size, place and slant, with a shaky hand (--sloppy: smaller and larger, rotated up
to 15 degrees, wavy lines), drawn with mouse moves spaced as by a slow or a fast hand. The app reads it exactly
as when a person draws: canvas -> preprocessing -> model -> the prediction label.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QLabel  # noqa: E402

from drawing import ALTERNATES, DIGITS, as_a_person_draws, draw  # noqa: E402
from fastmnist.gui.app import create_window  # noqa: E402
from fastmnist.gui.canvas import Canvas  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-digit", type=int, default=30)
    parser.add_argument("--sloppy", action="store_true")
    parser.add_argument("--model", help="a shipped model name or weights file (default: the app's choice)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    app = QApplication.instance() or QApplication([])
    window = create_window(args.model)
    window.resize(1000, 640)
    window.show()
    QTest.qWaitForWindowExposed(window)
    canvas, label = window.findChild(Canvas, "canvas"), window.findChild(QLabel, "prediction")
    rng = np.random.default_rng(args.seed)
    total = 0
    for digit in sorted(DIGITS):
        read = []
        for sample in range(args.per_digit):
            canvas.clear()
            QTest.qWait(60)
            style = ALTERNATES[digit] if sample % 2 else DIGITS[digit]
            draw(canvas, as_a_person_draws(style, rng, args.sloppy), step=rng.uniform(0.01, 0.12 if args.sloppy else 0.06))
            QTest.qWait(150)  # longer than the app's prediction debounce
            read.append(label.text() or "_")
        hits = read.count(digit)
        total += hits
        print(f"{digit}: {hits}/{args.per_digit}  read as {''.join(read)}", flush=True)
    print(f"model '{window.model().name}': {total}/{10 * args.per_digit} drawn digits read correctly"
          f"{' (sloppy hand)' if args.sloppy else ''}")
    window.close()
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
