"""Digits as a person draws them, and drawing them on the app's canvas with real Qt mouse events.

Strokes are lists of points in normalised canvas coordinates ((0, 0) top left, (1, 1) bottom right), in
drawing order. Shared by the app's tests and the drawn-digit survey (drawn_digit_survey.py).
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest


def arc(centre_x, centre_y, radius_x, radius_y, start, stop, count=30):
    """Points along an elliptic arc; angles in degrees, clockwise on screen from 3 o'clock."""
    return [(centre_x + radius_x * math.cos(math.radians(a)), centre_y + radius_y * math.sin(math.radians(a)))
            for a in np.linspace(start, stop, count)]


# Each digit the way most people write it.
DIGITS = {
    "0": [arc(0.5, 0.5, 0.2, 0.33, -90, -450, 50)],
    "1": [[(0.47, 0.18), (0.5, 0.5), (0.53, 0.82)]],
    "2": [arc(0.5, 0.33, 0.18, 0.17, 200, 400) + [(0.3, 0.85), (0.73, 0.85)]],
    "3": [arc(0.5, 0.32, 0.17, 0.15, 200, 450) + arc(0.5, 0.66, 0.19, 0.19, 270, 520)[1:]],
    "4": [[(0.58, 0.15), (0.28, 0.62), (0.76, 0.62)], [(0.63, 0.35), (0.63, 0.88)]],
    "5": [[(0.34, 0.17), (0.33, 0.48)] + arc(0.49, 0.65, 0.2, 0.19, 235, 500), [(0.34, 0.17), (0.7, 0.17)]],
    "6": [[(0.66, 0.15), (0.5, 0.26), (0.38, 0.42)] + arc(0.5, 0.66, 0.18, 0.19, 200, -160, 40)],
    "7": [[(0.28, 0.18), (0.72, 0.18), (0.45, 0.86)]],
    "8": [arc(0.5, 0.3, 0.15, 0.15, 90, 450) + arc(0.5, 0.66, 0.19, 0.19, -90, 270, 40)],
    "9": [arc(0.5, 0.33, 0.17, 0.16, 0, -360, 40) + [(0.64, 0.86)]],
}

# Other common ways of writing each digit.
ALTERNATES = {
    "0": [arc(0.5, 0.5, 0.22, 0.33, -100, -460, 50)],                                   # overlapping close
    "1": [[(0.38, 0.3), (0.52, 0.15), (0.52, 0.85)]],                                  # with a flag
    "2": [arc(0.5, 0.33, 0.18, 0.17, 200, 390) + [(0.32, 0.82)] + arc(0.36, 0.8, 0.05, 0.05, 180, -90, 10)
          + [(0.74, 0.84)]],                                                            # a loop at the base
    "3": [arc(0.48, 0.3, 0.17, 0.14, 210, 450) + [(0.42, 0.48), (0.5, 0.46)] + arc(0.48, 0.66, 0.2, 0.2, 270, 510)],
    "4": [[(0.3, 0.15), (0.28, 0.55), (0.72, 0.55)], [(0.66, 0.15), (0.66, 0.88)]],    # open top
    "5": [[(0.7, 0.17), (0.34, 0.17), (0.32, 0.47)] + arc(0.49, 0.64, 0.2, 0.19, 235, 500)],  # one stroke
    "6": [[(0.62, 0.15), (0.42, 0.35), (0.33, 0.6)] + arc(0.5, 0.66, 0.17, 0.18, 180, -180, 40)],
    "7": [[(0.28, 0.18), (0.72, 0.18), (0.45, 0.86)], [(0.38, 0.52), (0.66, 0.52)]],   # crossed
    "8": [arc(0.5, 0.3, 0.15, 0.15, 90, 450, 30) + arc(0.5, 0.66, 0.19, 0.19, -90, 270, 40)],
    "9": [arc(0.5, 0.32, 0.17, 0.15, 0, -360, 40) + [(0.67, 0.86)]],                   # straight stem
}


def as_a_person_draws(strokes, rng: np.random.Generator, sloppy: bool = False):
    """`strokes` at a random size and place, slanted or rotated, squashed, with a shaky or wobbly hand.

    Neat: 45-100% of the canvas, slant -0.25..0.2, jitter. Sloppy: 25-105%, rotated up to 15 degrees,
    wavy lines."""
    scale = rng.uniform(0.25, 1.05) if sloppy else rng.uniform(0.45, 1.0)
    squash = rng.uniform(0.7, 1.25) if sloppy else rng.uniform(0.75, 1.2)
    angle = math.radians(rng.uniform(-15, 15)) if sloppy else 0.0
    slant = 0.0 if sloppy else rng.uniform(-0.25, 0.2)
    extent = scale * (0.4 if sloppy else 0.36)
    centre_x, centre_y = rng.uniform(extent, 1 - extent, 2)
    phase, amplitude = rng.uniform(0, 2 * math.pi, 2), (rng.uniform(0, 0.025) if sloppy else 0.0)
    jitter = 0.0 if sloppy else 0.004
    result = []
    for stroke in strokes:
        points = []
        for x, y in stroke:
            dx, dy = (x - 0.5) * squash, y - 0.5
            dx -= slant * dy
            dx, dy = dx * math.cos(angle) - dy * math.sin(angle), dx * math.sin(angle) + dy * math.cos(angle)
            dx += amplitude * math.sin(7 * y + phase[0])
            dy += amplitude * math.sin(7 * x + phase[1])
            px = centre_x + scale * dx + rng.normal(0, jitter)
            py = centre_y + scale * dy + rng.normal(0, jitter)
            points.append((min(max(px, 0.01), 0.99), min(max(py, 0.01), 0.99)))
        result.append(points)
    return result


def draw(canvas, strokes, step: float = 0.02) -> None:
    """Draw `strokes` on `canvas` (a fastmnist.gui.canvas.Canvas) with a mouse press, a move every `step` (normalised
    canvas units: small for a slow hand, large for a fast one) and a release per stroke."""
    side = min(canvas.width(), canvas.height())
    left, top = (canvas.width() - side) / 2, (canvas.height() - side) / 2
    for stroke in strokes:
        points = []
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            count = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
            points += [(x0 + (x1 - x0) * i / count, y0 + (y1 - y0) * i / count) for i in range(count)]
        points.append(stroke[-1])
        pixels = [QPoint(round(left + x * side), round(top + y * side)) for x, y in points]
        QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pixels[0])
        for pixel in pixels[1:]:
            QTest.mouseMove(canvas, pixel)
        QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pixels[-1])
