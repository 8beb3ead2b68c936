"""Object classes of the procedural data set (synth.py): geometry and colours, no rendering.

Every class is a function rng -> list[Part] in unit coordinates (x right, y down, the object
inside roughly [-1, 1]^2). A Part is a closed polygon (with optional holes) that the photo
fills with a shaded colour and the sketch outlines; `lines` are open creases drawn in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Color = tuple[float, float, float]


@dataclass
class Part:
    poly: np.ndarray  # [N, 2] closed outline, unit coordinates
    color: Color  # RGB in [0, 1]
    z: int = 0  # drawing order; higher parts hide lower ones' outlines in the sketch
    holes: list[np.ndarray] = field(default_factory=list)
    shade: str = "round"  # "round" (dome), "cylinder" (along x), "flat" (gradient)
    gloss: float = 0.0  # specular highlight strength
    texture: tuple[float, float] = (6.0, 0.05)  # (noise cells across the frame, amplitude)
    detail: bool = False  # optional in a sketch (some drawers leave it out)
    lines: list[np.ndarray] = field(default_factory=list)  # open creases, unit coordinates


def ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 72, rot: float = 0.0
) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    p = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    c, s = np.cos(rot), np.sin(rot)
    return p @ np.array([[c, s], [-s, c]]) + [cx, cy]


def rect(x0: float, y0: float, x1: float, y1: float, r: float = 0.0, n: int = 6) -> np.ndarray:
    """Axis-aligned rectangle, corners rounded with radius r (clockwise on screen)."""
    if r <= 0:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    pts = []
    for cx, cy, a0 in (
        (x1 - r, y0 + r, -90),
        (x1 - r, y1 - r, 0),
        (x0 + r, y1 - r, 90),
        (x0 + r, y0 + r, 180),
    ):
        a = np.radians(np.linspace(a0, a0 + 90, n))
        pts.append(np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1))
    return np.concatenate(pts)


def _jit(rng: np.random.Generator, base: Color, amount: float = 0.12) -> Color:
    c = np.clip(np.asarray(base) * rng.uniform(0.8, 1.15) + rng.normal(0, amount, 3), 0.03, 0.97)
    return (float(c[0]), float(c[1]), float(c[2]))


def _pick(rng: np.random.Generator, palette: list[Color], amount: float = 0.08) -> Color:
    return _jit(rng, palette[int(rng.integers(len(palette)))], amount)


BROWNS: list[Color] = [(0.45, 0.28, 0.14), (0.35, 0.22, 0.12), (0.55, 0.38, 0.22)]
VIVID: list[Color] = [
    (0.85, 0.15, 0.15),
    (0.15, 0.35, 0.8),
    (0.95, 0.75, 0.1),
    (0.2, 0.6, 0.25),
    (0.6, 0.2, 0.65),
    (0.95, 0.5, 0.1),
    (0.1, 0.6, 0.7),
    (0.9, 0.9, 0.88),
]


def apple(rng: np.random.Generator) -> list[Part]:
    w, h = rng.uniform(0.82, 0.98), rng.uniform(0.72, 0.85)
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    x, y = w * np.sin(t), -h * np.cos(t) + 0.1
    y = y + np.where(y < 0.1, 0.2 * np.exp(-((x / 0.28) ** 2)), -0.07 * np.exp(-((x / 0.2) ** 2)))
    top = 0.1 - h + 0.2
    body = _pick(rng, [(0.78, 0.1, 0.08), (0.5, 0.75, 0.18), (0.92, 0.78, 0.2), (0.65, 0.08, 0.12)])
    lean = rng.uniform(-0.12, 0.12)
    stem = np.array(
        [
            [-0.03, top + 0.05],
            [0.03, top + 0.05],
            [0.04 + lean, top - 0.28],
            [-0.02 + lean, top - 0.28],
        ]
    )
    leaf_ang = rng.uniform(-0.5, 0.1)
    leaf = ellipse(0.2 + lean, top - 0.2, 0.2, 0.07, 40, rot=leaf_ang)
    parts = [
        Part(np.stack([x, y], 1), body, 1, gloss=0.5, texture=(10.0, 0.06)),
        Part(stem, _pick(rng, BROWNS), 2, shade="flat", texture=(4, 0.02)),
    ]
    if rng.random() < 0.8:
        parts.append(
            Part(
                leaf,
                _pick(rng, [(0.25, 0.6, 0.15)]),
                3,
                detail=True,
                lines=[np.array([[0.02 + lean, top - 0.2], [0.38 + lean, top - 0.2]])],
            )
        )
    return parts


def mug(rng: np.random.Generator) -> list[Part]:
    x0, x1 = -0.62, rng.uniform(0.35, 0.5)
    y0, y1 = rng.uniform(-0.7, -0.5), rng.uniform(0.6, 0.75)
    col = _pick(rng, VIVID + [(0.95, 0.95, 0.93), (0.15, 0.15, 0.18)])
    hc, hy, hr = x1 + 0.12, (y0 + y1) / 2 - 0.05, rng.uniform(0.3, 0.4)
    handle = Part(
        ellipse(hc, hy, hr * 0.85, hr),
        col,
        0,
        holes=[ellipse(hc, hy, hr * 0.45, hr * 0.6)],
        gloss=0.3,
    )
    body = Part(rect(x0, y0, x1, y1, r=0.06), col, 1, shade="cylinder", gloss=0.5)
    rim = Part(
        ellipse((x0 + x1) / 2, y0, (x1 - x0) / 2, 0.07, 48),
        _jit(rng, (0.25, 0.18, 0.12)),
        2,
        shade="flat",
        texture=(3, 0.02),
    )
    return [handle, body, rim]


def house(rng: np.random.Generator) -> list[Part]:
    wx, top, bot = rng.uniform(0.55, 0.75), rng.uniform(-0.2, 0.0), 0.85
    peak = rng.uniform(-0.95, -0.65)
    walls = _pick(
        rng, [(0.92, 0.86, 0.72), (0.95, 0.95, 0.93), (0.65, 0.78, 0.9), (0.72, 0.3, 0.22)]
    )
    roof_c = _pick(rng, [(0.55, 0.12, 0.1), (0.35, 0.3, 0.3), (0.4, 0.25, 0.15)])
    parts = [
        Part(rect(-wx, top, wx, bot), walls, 1, shade="flat", texture=(12, 0.04)),
        Part(
            np.array([[-wx - 0.15, top], [wx + 0.15, top], [0.0, peak]]),
            roof_c,
            2,
            shade="flat",
            texture=(16, 0.08),
        ),
    ]
    if rng.random() < 0.7:
        cx = rng.uniform(0.2, wx - 0.2)
        parts.append(
            Part(
                rect(cx - 0.08, peak + 0.1, cx + 0.08, top - 0.1),
                roof_c,
                0,
                shade="flat",
                detail=True,
            )
        )
    dx = rng.uniform(-wx + 0.3, wx - 0.3)
    parts.append(
        Part(rect(dx - 0.13, bot - 0.45, dx + 0.13, bot), _pick(rng, BROWNS), 3, shade="flat")
    )
    glass = _pick(rng, [(0.6, 0.8, 0.95), (0.95, 0.85, 0.45)])
    for wxc in (-wx / 2 - 0.05, wx / 2 + 0.05):
        if abs(wxc - dx) < 0.35:
            continue
        wy = top + 0.25
        parts.append(
            Part(
                rect(wxc - 0.14, wy - 0.12, wxc + 0.14, wy + 0.12),
                glass,
                3,
                shade="flat",
                gloss=0.2,
                detail=True,
                lines=[
                    np.array([[wxc, wy - 0.12], [wxc, wy + 0.12]]),
                    np.array([[wxc - 0.14, wy], [wxc + 0.14, wy]]),
                ],
            )
        )
    return parts


def tree(rng: np.random.Generator) -> list[Part]:
    tw = rng.uniform(0.08, 0.14)
    trunk = np.array([[-tw, 0.05], [tw, 0.05], [tw * 1.4, 0.95], [-tw * 1.4, 0.95]])
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    k, ph = int(rng.integers(6, 10)), rng.uniform(0, 2 * np.pi)
    rx, ry = rng.uniform(0.6, 0.8), rng.uniform(0.55, 0.7)
    r = 1 + 0.07 * np.sin(k * t + ph) + 0.03 * np.sin((k + 3) * t)
    canopy = np.stack([rx * r * np.cos(t), -0.3 + ry * r * np.sin(t)], 1)
    green = _pick(rng, [(0.2, 0.5, 0.15), (0.3, 0.6, 0.2), (0.15, 0.4, 0.18), (0.8, 0.45, 0.1)])
    return [
        Part(trunk, _pick(rng, BROWNS), 0, shade="cylinder", texture=(30, 0.08)),
        Part(canopy, green, 1, texture=(28, 0.16)),
    ]


def car(rng: np.random.Generator) -> list[Part]:
    roof, hood = rng.uniform(-0.5, -0.35), rng.uniform(-0.02, 0.1)
    body = np.array(
        [
            [-1.0, 0.42],
            [-1.0, hood - 0.02],
            [-0.62, hood - 0.06],
            [-0.45, roof],
            [0.2, roof],
            [0.45, hood - 0.04],
            [0.93, hood + 0.04],
            [1.0, 0.2],
            [1.0, 0.42],
        ]
    )
    col = _pick(rng, VIVID + [(0.2, 0.2, 0.22), (0.75, 0.75, 0.78)])
    glass = _jit(rng, (0.55, 0.7, 0.8), 0.05)
    w1 = np.array(
        [[-0.56, hood - 0.08], [-0.42, roof + 0.06], [-0.14, roof + 0.06], [-0.14, hood - 0.08]]
    )
    w2 = np.array(
        [[-0.06, hood - 0.08], [-0.06, roof + 0.06], [0.17, roof + 0.06], [0.36, hood - 0.08]]
    )
    parts = [
        Part(body, col, 1, gloss=0.6, texture=(5, 0.03)),
        Part(w1, glass, 2, shade="flat", gloss=0.4, detail=True),
        Part(w2, glass, 2, shade="flat", gloss=0.4, detail=True),
    ]
    rw = rng.uniform(0.2, 0.25)
    for cx in (-0.6, 0.6):
        parts.append(Part(ellipse(cx, 0.42, rw, rw, 48), (0.08, 0.08, 0.09), 3, texture=(8, 0.02)))
        parts.append(
            Part(
                ellipse(cx, 0.42, rw * 0.45, rw * 0.45, 32),
                (0.7, 0.7, 0.72),
                4,
                gloss=0.5,
                detail=True,
            )
        )
    return parts


def fish(rng: np.random.Generator) -> list[Part]:
    h = rng.uniform(0.38, 0.55)
    x = np.linspace(-0.75, 0.85, 40)
    u = (x - 0.05) / 0.8
    prof = h * np.clip(1 - u**2, 0, 1) ** 0.6
    body = np.concatenate([np.stack([x, -prof], 1), np.stack([x[::-1], prof[::-1] * 0.85], 1)])
    spread = rng.uniform(0.3, 0.45)
    tail = np.array([[-0.6, 0.0], [-1.0, -spread], [-0.9, 0.0], [-1.0, spread]])
    fin = np.array([[-0.2, -h * 0.8], [0.05, -h - 0.2], [0.25, -h * 0.85]])
    col = _pick(
        rng,
        [
            (0.95, 0.5, 0.1),
            (0.2, 0.45, 0.85),
            (0.75, 0.78, 0.8),
            (0.95, 0.8, 0.15),
            (0.85, 0.25, 0.3),
        ],
    )
    gill = np.array([[0.42, -h * 0.55], [0.36, 0.0], [0.42, h * 0.45]])
    return [
        Part(tail, _jit(rng, col), 0, shade="flat", texture=(12, 0.08)),
        Part(fin, _jit(rng, col), 0, shade="flat"),
        Part(body, col, 1, gloss=0.5, texture=(20, 0.08), lines=[gill]),
        Part(ellipse(0.6, -h * 0.2, 0.06, 0.06, 24), (0.05, 0.05, 0.05), 2, shade="flat"),
    ]


def star(rng: np.random.Generator) -> list[Part]:
    k = 5
    inner = rng.uniform(0.38, 0.5)
    a = np.linspace(-np.pi / 2, 1.5 * np.pi, 2 * k, endpoint=False)
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    poly = np.stack([r * np.cos(a), r * np.sin(a) + 0.08], 1)
    col = _pick(rng, [(0.98, 0.8, 0.1), (0.95, 0.55, 0.1), (0.85, 0.15, 0.15), (0.75, 0.75, 0.8)])
    return [Part(poly, col, 1, gloss=0.6, texture=(6, 0.04))]


def umbrella(rng: np.random.Generator) -> list[Part]:
    n, base = int(rng.integers(4, 7)), 0.0
    a = np.linspace(np.pi, 2 * np.pi, 60)
    top = np.stack([0.95 * np.cos(a), base + 0.85 * np.sin(a)], 1)
    xs = np.linspace(0.95, -0.95, n * 12 + 1)
    frac = ((0.95 - xs) / 1.9 * n) % 1.0
    bottom = np.stack([xs, base - 0.12 * np.sin(np.pi * frac)], 1)
    canopy = np.concatenate([top, bottom[1:-1]])
    ribs = [
        np.array([[0.0, base - 0.85], [x, base]]) for x in np.linspace(-0.95, 0.95, n + 1)[1:-1]
    ]
    col = _pick(rng, VIVID)
    shaft = rect(-0.03, base - 0.05, 0.03, 0.72)
    ha = np.linspace(0, np.pi, 20)
    hr, hx = 0.13, -0.13 if rng.random() < 0.5 else 0.13
    outer = np.stack(
        [hx + (hr + 0.03) * np.cos(ha) * np.sign(-hx), 0.72 + (hr + 0.03) * np.sin(ha)], 1
    )
    inner = np.stack(
        [hx + (hr - 0.03) * np.cos(ha) * np.sign(-hx), 0.72 + (hr - 0.03) * np.sin(ha)], 1
    )
    hook = np.concatenate([outer, inner[::-1]])
    dark = _pick(rng, BROWNS + [(0.12, 0.12, 0.12)])
    return [
        Part(shaft, dark, 0, shade="cylinder"),
        Part(hook, dark, 0, shade="flat"),
        Part(canopy, col, 1, texture=(8, 0.04), lines=ribs),
        Part(rect(-0.025, base - 0.97, 0.025, base - 0.83), dark, 0, shade="flat", detail=True),
    ]


def bottle(rng: np.random.Generator) -> list[Part]:
    w, nw = rng.uniform(0.3, 0.4), rng.uniform(0.1, 0.14)
    sh, neck_top = rng.uniform(-0.25, -0.05), rng.uniform(-0.78, -0.65)
    s = np.linspace(0, 1, 12)
    right_sh = np.stack(
        [nw + (w - nw) * (1 - np.cos(np.pi * s)) / 2, neck_top + 0.2 + (sh - neck_top - 0.2) * s], 1
    )
    right = np.concatenate([[[nw, neck_top]], right_sh, [[w, 0.85], [w - 0.05, 0.92]]])
    left = right[::-1] * [-1, 1]
    body = np.concatenate([right, left])
    glass = _pick(rng, [(0.15, 0.5, 0.2), (0.45, 0.25, 0.1), (0.2, 0.35, 0.75), (0.75, 0.85, 0.85)])
    cap = rect(-nw - 0.02, neck_top - 0.15, nw + 0.02, neck_top + 0.02, r=0.02)
    ly0 = rng.uniform(0.1, 0.3)
    label = rect(-w, ly0, w, ly0 + rng.uniform(0.25, 0.4))
    return [
        Part(body, glass, 1, shade="cylinder", gloss=0.8, texture=(4, 0.02)),
        Part(cap, _pick(rng, VIVID), 2, shade="cylinder", gloss=0.3),
        Part(
            label,
            _pick(rng, [(0.95, 0.93, 0.85), (0.9, 0.8, 0.3), (0.85, 0.2, 0.2)]),
            2,
            shade="cylinder",
            detail=True,
        ),
    ]


def chair(rng: np.random.Generator) -> list[Part]:
    sw, seat_y = rng.uniform(0.5, 0.62), rng.uniform(0.0, 0.15)
    back_top = rng.uniform(-0.95, -0.75)
    col = _pick(rng, BROWNS + [(0.85, 0.2, 0.15), (0.2, 0.3, 0.6), (0.9, 0.9, 0.88)])
    lw = 0.07
    parts = [
        Part(
            rect(-sw + 0.1, back_top, sw - 0.1, seat_y, r=0.08),
            col,
            1,
            shade="flat",
            texture=(10, 0.05),
        ),
        Part(
            rect(-sw - 0.05, seat_y, sw + 0.05, seat_y + 0.14, r=0.03),
            _jit(rng, col),
            2,
            shade="flat",
        ),
    ]
    if rng.random() < 0.6:  # a slatted back: hole in the backrest
        parts[0].holes.append(rect(-sw + 0.22, back_top + 0.15, sw - 0.22, seat_y - 0.25))
    for x in (-sw + 0.05, sw - 0.05):
        parts.append(Part(rect(x - lw, seat_y + 0.14, x + lw, 0.95), col, 3, shade="cylinder"))
    for x in (-sw + 0.22, sw - 0.22):
        parts.append(
            Part(
                rect(x - lw * 0.8, seat_y + 0.14, x + lw * 0.8, 0.78),
                _jit(rng, col, 0.02),
                0,
                shade="cylinder",
                detail=True,
            )
        )
    return parts


def flower(rng: np.random.Generator) -> list[Part]:
    k, cy = int(rng.integers(5, 9)), -0.3
    rot = rng.uniform(0, np.pi)
    petal_c = _pick(
        rng,
        [
            (0.95, 0.45, 0.65),
            (0.6, 0.3, 0.8),
            (0.97, 0.97, 0.95),
            (0.9, 0.15, 0.2),
            (0.98, 0.85, 0.2),
        ],
    )
    L = rng.uniform(0.3, 0.4)
    parts = [Part(rect(-0.03, cy, 0.03, 0.95), (0.25, 0.55, 0.2), 0, shade="cylinder")]
    leaf_side = 1 if rng.random() < 0.5 else -1
    parts.append(
        Part(
            ellipse(leaf_side * 0.2, 0.55, 0.2, 0.07, 40, rot=leaf_side * -0.5),
            (0.25, 0.6, 0.2),
            0,
            detail=True,
        )
    )
    for i in range(k):
        a = rot + 2 * np.pi * i / k
        parts.append(
            Part(
                ellipse(np.cos(a) * L, cy + np.sin(a) * L, L * 0.85, L * 0.38, 40, rot=-a),
                _jit(rng, petal_c, 0.04),
                1 + i,  # each petal overlaps the previous one
                texture=(12, 0.05),
            )
        )
    parts.append(
        Part(
            ellipse(0, cy, 0.17, 0.17, 40),
            _pick(rng, [(0.95, 0.75, 0.1), (0.4, 0.25, 0.1)]),
            2 + k,
            texture=(30, 0.15),
        )
    )
    return parts


def lamp(rng: np.random.Generator) -> list[Part]:
    tw, bw = rng.uniform(0.22, 0.35), rng.uniform(0.55, 0.7)
    t0, t1 = -0.9, rng.uniform(-0.3, -0.15)
    shade_c = _pick(rng, [(0.95, 0.9, 0.75), (0.85, 0.3, 0.2), (0.3, 0.5, 0.4), (0.9, 0.9, 0.9)])
    metal = _pick(rng, [(0.7, 0.6, 0.3), (0.3, 0.3, 0.32), (0.8, 0.8, 0.82)])
    return [
        Part(rect(-0.04, t1, 0.04, 0.8), metal, 0, shade="cylinder", gloss=0.5),
        Part(
            np.array([[-tw, t0], [tw, t0], [bw, t1], [-bw, t1]]),
            shade_c,
            1,
            shade="cylinder",
            texture=(20, 0.05),
        ),
        Part(ellipse(0, 0.85, 0.4, 0.09, 48), metal, 2, gloss=0.5),
    ]


CLASSES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "apple": apple,
    "mug": mug,
    "house": house,
    "tree": tree,
    "car": car,
    "fish": fish,
    "star": star,
    "umbrella": umbrella,
    "bottle": bottle,
    "chair": chair,
    "flower": flower,
    "lamp": lamp,
}
FLIPPABLE = frozenset({"mug", "car", "fish", "umbrella", "apple", "flower"})
