"""The toy world: a synthetic video domain with ground truth, rendered with numpy alone, seeded.

A clip shows one or two objects (ball, cube, cone), each a third to a half of the frame's height,
standing on a floor in front of a papered wall. They slide, tilt and occlude each other while the
camera pans or zooms. Every frame comes with its true depth, a mask per object, the true optical flow
to the next frame and a caption from a small grammar:

    "a red striped ball and a yellow cube on a gray floor"

The caption names each object's shape, colour and texture kind and the floor's colour, never the
texture's free parameters: the pattern's angle, period and phase, the motif of the dots, the shade of
the pattern's second colour, the light, the wall's tint and its wallpaper. Depth and text therefore do
not fix the appearance, so a per-frame editor is free to draw another pattern in every frame: exactly
the inconsistency that Pix2Video's attention to the anchor and previous frame is meant to remove.

What the caption leaves free is shared inside a frame, so that a denoiser gains by looking from one
region at another, which is what self-attention does and what Pix2Video's injection exploits: every
object of a scene has the same pattern angle (the wallpaper's too), period and shade, dotted objects
repeat the same random motif of dots, and the wallpaper repeats a random motif of its own all along
the wall. Patterns are at a scale the 4x latent holds (a period of 14 to 29 pixels, at least 3 latent
cells).

The geometry is 2.5-D: a pinhole camera above a flat floor, objects as screen-space shapes whose size
and floor contact follow their distance. The camera pans (a shift of the world) and zooms (a change of
focal length), so the true flow of a floor pixel follows the camera alone and that of an object pixel
follows the object's rigid motion (shift, scale) composed with the camera's.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

SIZE = 128  # pixels, square; the toy models are trained at this size (latent 32x32, a 4x VAE)
FRAMES = 16
SUPERSAMPLE = 2  # colour is rendered at 2x and box-filtered: edges without staircase aliasing

# Six hues 60 degrees apart: easy to tell apart in a picture and by a hue test (see `colour_of`).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "yellow": (225, 210, 30),
    "green": (40, 170, 50),
    "cyan": (30, 190, 200),
    "blue": (40, 70, 215),
    "purple": (150, 45, 195),
}
FLOORS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "brown": (120, 80, 45),
    "white": (225, 222, 215),
}
SHAPES = ("ball", "cube", "cone")
TEXTURES = ("plain", "striped", "dotted", "checkered")  # "plain" is not said in the caption

DOT_RADIUS = 0.17  # a motif's dots: radius in periods
PAPER_CONTRAST = 0.18  # the wallpaper's motif: this much darker than the wall

WALL_DEPTH = 12.0
BOTTOM_DEPTH = 1.5  # floor distance at the bottom row
RADIUS = 0.68  # an object's radius is RADIUS * size / distance: a third to a half of the frame's height


@dataclass
class ToyObject:
    shape: str
    colour: str
    texture: str
    x0: float  # world x of the centre at frame 0 (pixels)
    vx: float  # pixels per frame
    z0: float  # distance at frame 0
    vz: float  # distance per frame
    theta0: float  # spin angle at frame 0 (radians)
    omega: float  # radians per frame
    # The texture's free parameters, never named in the caption. Object-local units (1 = the
    # object's radius). `period` and `shade` are the scene's (every object of a scene shares them);
    # the angle and phase are the object's own. `dots`: where a period's dots lie (fractions of a
    # period, along and across), the scene's own random motif, repeated over every dotted object.
    angle: float = 0.0
    phase: tuple[float, float] = (0.0, 0.0)  # fractions of a period along and across the pattern
    dots: tuple[tuple[float, float], ...] = ((0.5, 0.5),)
    period: float = 0.65
    shade: float = 0.32  # the pattern's second colour: < 1 the base this much as bright, > 1 mixed
    #                      towards white by (shade - 1)

    def words(self) -> str:
        tex = "" if self.texture == "plain" else f"{self.texture} "
        return f"{self.colour} {tex}{self.shape}"


@dataclass
class ToyScene:
    objects: list[ToyObject]
    floor: str
    wall: tuple[float, float, float]  # backdrop tint, not in the caption
    horizon: float  # world y of the horizon (pixels)
    light: tuple[float, float, float]
    pan: float  # world x shift per frame
    zoom: float  # relative focal-length change per frame
    floor_grid: float  # spacing of the floor's faint tiles (world units), not in the caption
    # The backdrop's wallpaper, not in the caption: a random motif of dots repeated along the wall at the
    # scene's angle, with a period in pixels: what repeats is arbitrary, so it can only be copied.
    paper: tuple[float, float] = (0.0, 16.0)  # angle, period (pixels)
    paper_dots: tuple[tuple[float, float], ...] = ((0.5, 0.5),)
    seed: int = 0
    size: int = SIZE
    frames: int = FRAMES

    def with_object(self, index: int, **change: str) -> ToyScene:
        """The same scene with one object's colour/texture/shape replaced (ground truth of an edit)."""
        objs = [ToyObject(**{**o.__dict__, **(change if i == index else {})}) for i, o in enumerate(self.objects)]
        return ToyScene(**{**self.__dict__, "objects": objs})


@dataclass
class ToyClip:
    """A rendered clip. frames: (T,H,W,3) uint8; depth: (T,H,W) float32 distance (larger = farther);
    disparity: 1/depth, the 'larger = nearer' convention of DPT/MiDaS; masks: (T,n_objects,H,W) bool,
    the visible part of each object; ids: (T,H,W) int8, -1 floor/backdrop else object index;
    flow: (T-1,H,W,2) float32 forward flow (dx, dy) from frame t to t+1; captions: one per frame
    (objects named left to right as they stand in that frame)."""

    scene: ToyScene
    frames: np.ndarray
    depth: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    flow: np.ndarray
    captions: list[str] = field(default_factory=list)

    @property
    def disparity(self) -> np.ndarray:
        return (1.0 / self.depth).astype(np.float32)

    @property
    def caption(self) -> str:
        return self.captions[0]


def random_scene(seed: int, *, size: int = SIZE, frames: int = FRAMES, objects: int | None = None) -> ToyScene:
    """A scene drawn from the toy world's distribution; the same seed gives the same scene."""
    rng = np.random.default_rng(seed)
    n = int(objects if objects is not None else rng.integers(1, 3))
    xs = rng.permutation(np.linspace(0.28, 0.72, n)) * size + rng.uniform(-0.05, 0.05, n) * size
    objs = []
    colours = rng.permutation(list(COLOURS))
    period = float(rng.uniform(0.55, 0.8))
    shade = float(rng.uniform(0.2, 0.42)) if rng.random() < 0.5 else float(rng.uniform(1.5, 1.75))
    angle = float(rng.uniform(0, np.pi))  # the scene's pattern angle: every object's and the wallpaper's
    dots = _motif(rng)
    for i in range(n):
        objs.append(
            ToyObject(
                shape=str(rng.choice(SHAPES)),
                colour=str(colours[i]),
                texture=str(rng.choice(TEXTURES)),
                x0=float(xs[i]),
                vx=float(rng.uniform(-1.2, 1.2)) * size / 128,
                z0=float(rng.uniform(2.4, 3.4)),
                vz=float(rng.uniform(-0.02, 0.02)),
                theta0=float(rng.uniform(-0.4, 0.4)),
                omega=0.0,
                angle=angle,
                dots=dots,
                phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
                period=period,
                shade=shade,
            )
        )
    hue = rng.uniform(0, 1)
    wall = colorsys.hsv_to_rgb(hue, rng.uniform(0.08, 0.25), rng.uniform(0.75, 0.95))
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.8, -0.2), 1.0])
    light = light / np.linalg.norm(light)
    moving = rng.integers(0, 3)  # 0: pan, 1: zoom, 2: both, gently
    pan = float(rng.uniform(-1.0, 1.0)) * size / 128 if moving in (0, 2) else 0.0
    zoom = float(rng.uniform(-0.012, 0.012)) if moving in (1, 2) else 0.0
    return ToyScene(
        objects=objs,
        floor=str(rng.choice(list(FLOORS))),
        wall=tuple(float(c * 255) for c in wall),
        horizon=float(rng.uniform(0.3, 0.42)) * size,
        light=tuple(float(v) for v in light),
        pan=pan,
        zoom=zoom,
        floor_grid=float(rng.uniform(0.6, 1.4)),
        paper=(angle, float(rng.uniform(12, 20))),
        paper_dots=_motif(rng),
        seed=seed,
        size=size,
        frames=frames,
    )


def caption(scene: ToyScene, t: int = 0) -> str:
    """'a red striped ball and a yellow cube on a gray floor': the objects named left to right as they
    stand in frame t."""
    xs = [_object_pose(scene, o, t)[0] for o in scene.objects]
    things = " and ".join(f"a {scene.objects[i].words()}" for i in sorted(range(len(xs)), key=lambda j: xs[j]))
    return f"{things} on a {scene.floor} floor"


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


class _Camera:
    def __init__(self, scene: ToyScene, t: int):
        self.c = scene.size / 2
        self.shift = scene.pan * t
        self.scale = 1.0 + scene.zoom * t

    def to_world(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (u - self.c) / self.scale + self.c + self.shift, (v - self.c) / self.scale + self.c

    def to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x - self.shift - self.c) * self.scale + self.c, (y - self.c) * self.scale + self.c


def _floor_k(scene: ToyScene) -> float:
    return BOTTOM_DEPTH * (scene.size - scene.horizon)


def _object_pose(scene: ToyScene, o: ToyObject, t: int) -> tuple[float, float, float, float]:
    """World centre (x, y), radius (pixels) and spin angle of object `o` at frame t."""
    z = max(2.0, o.z0 + o.vz * t)
    r = RADIUS * scene.size / z
    base = scene.horizon + _floor_k(scene) / z  # where the object touches the floor
    return o.x0 + o.vx * t, base - r, r, o.theta0 + o.omega * t


def _shape_mask(shape: str, lu: np.ndarray, lv: np.ndarray, su: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """Inside test. (lu, lv): local coordinates spun with the object; (su, sv): upright local
    coordinates (the silhouette of a ball or cone does not turn when it spins)."""
    if shape == "ball":
        return su * su + sv * sv <= 1.0
    if shape == "cube":
        return (np.abs(lu) <= 0.78) & (np.abs(lv) <= 0.78)
    # cone: apex at the top, base at the bottom
    return (sv <= 1.0) & (sv >= -1.0) & (np.abs(su) <= (sv + 1.0) * 0.5)


def _texture(o: ToyObject, lu: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """1 where the base colour shows, 0 where the pattern's second colour does."""
    if o.texture == "plain":
        return np.ones_like(lu, dtype=np.float32)
    c, s = np.cos(o.angle), np.sin(o.angle)
    a = (lu * c + lv * s) / o.period + o.phase[0]  # along the pattern, in periods
    b = (-lu * s + lv * c) / o.period + o.phase[1]  # across it
    if o.texture == "striped":
        return (a % 1.0 < 0.5).astype(np.float32)
    if o.texture == "dotted":
        return (~_dotted(a, b, o.dots)).astype(np.float32)
    # checkered: squares of half a period
    return ((np.floor(2 * a) + np.floor(2 * b)) % 2 == 0).astype(np.float32)


def _shading(o: ToyObject, su: np.ndarray, sv: np.ndarray, light: np.ndarray) -> np.ndarray:
    if o.shape == "ball":
        nz = np.sqrt(np.clip(1.0 - su * su - sv * sv, 0.0, 1.0))
        lam = su * light[0] + sv * light[1] + nz * light[2]
        return 0.5 + 0.5 * np.clip(lam, 0, 1)
    if o.shape == "cone":
        lam = 0.75 + 0.25 * np.clip(su * light[0] * 1.5, -1, 1)
        return lam
    return np.full_like(su, 0.85 + 0.1 * light[2])


def _motif(rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """A random motif: 2 or 3 dots at random places in a period, none overlapping another or its copies."""
    dots: list[tuple[float, float]] = []
    while len(dots) < (2 if rng.random() < 0.5 else 3):
        p = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
        if all(min(abs(p[0] - q[0]), 1 - abs(p[0] - q[0])) ** 2 + min(abs(p[1] - q[1]), 1 - abs(p[1] - q[1])) ** 2
               > (2.6 * DOT_RADIUS) ** 2 for q in dots):
            dots.append(p)
    return tuple(dots)


def _dotted(a: np.ndarray, b: np.ndarray, dots: tuple[tuple[float, float], ...]) -> np.ndarray:
    """True inside a dot of the motif `dots` repeated every period, at coordinates (a, b) in periods."""
    inside = np.zeros(a.shape, bool)
    for da, db in dots:
        ea, eb = (a - da + 0.5) % 1.0 - 0.5, (b - db + 0.5) % 1.0 - 0.5
        inside |= ea * ea + eb * eb < DOT_RADIUS**2
    return inside


def _paper(scene: ToyScene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The wallpaper's brightness factor at world points (x, y): 1 - PAPER_CONTRAST on the motif."""
    angle, period = scene.paper
    a = (x * np.cos(angle) + y * np.sin(angle)) / period
    b = (-x * np.sin(angle) + y * np.cos(angle)) / period
    return (1.0 - PAPER_CONTRAST * _dotted(a, b, scene.paper_dots)).astype(np.float32)


def _render_layer(scene: ToyScene, t: int, u: np.ndarray, v: np.ndarray):
    """Colour (float 0-255), distance, object id and object-local coordinates at pixel centres u, v."""
    cam = _Camera(scene, t)
    x, y = cam.to_world(u, v)
    k = _floor_k(scene)
    below = y > scene.horizon + k / WALL_DEPTH
    depth = np.where(below, k / np.maximum(y - scene.horizon, 1e-3), WALL_DEPTH).astype(np.float32)
    # floor: named colour, darker towards the horizon, faint tiles on the ground plane
    floor = np.array(FLOORS[scene.floor], np.float32)
    gx = x * depth / scene.size / scene.floor_grid
    gz = depth / scene.floor_grid
    tiles = ((np.floor(gx) + np.floor(gz)) % 2) * 0.06 + 0.94
    fog = np.clip(depth / WALL_DEPTH, 0, 1)[..., None]
    ground = floor * (tiles * (1.0 - 0.25 * fog[..., 0]))[..., None]
    wall = np.array(scene.wall, np.float32) * ((0.9 + 0.1 * (y / scene.size)) * _paper(scene, x, y))[..., None]
    rgb = np.where(below[..., None], ground, wall)
    ids = np.full(u.shape, -1, np.int8)
    local = np.zeros(u.shape + (2,), np.float32)
    light = np.array(scene.light)
    zs = {i: max(2.0, o.z0 + o.vz * t) for i, o in enumerate(scene.objects)}
    for i in sorted(zs, key=lambda i: -zs[i]):  # painter's order: the nearest is drawn last
        o = scene.objects[i]
        cx, cy, r, th = _object_pose(scene, o, t)
        su, sv = (x - cx) / r, (y - cy) / r
        c, s = np.cos(-th), np.sin(-th)
        lu, lv = c * su - s * sv, s * su + c * sv
        inside = _shape_mask(o.shape, lu, lv, su, sv)
        if not inside.any():
            continue
        base = np.array(COLOURS[o.colour], np.float32)
        pattern = _texture(o, su, sv)[..., None]  # in the image's axes: the scene's angle is the same on every object
        second = base * o.shade if o.shade <= 1 else base + (255.0 - base) * (o.shade - 1)
        colour = (base * pattern + second * (1 - pattern)) * _shading(o, su, sv, light)[..., None]
        rgb = np.where(inside[..., None], colour, rgb)
        bulge = np.sqrt(np.clip(1 - su * su - sv * sv, 0, 1)) if o.shape == "ball" else 0.3 * (1 - np.abs(su))
        zobj = (zs[i] - 0.25 * bulge).astype(np.float32)
        depth = np.where(inside, zobj, depth)
        ids = np.where(inside, np.int8(i), ids)
        local = np.where(inside[..., None], np.stack([lu, lv], -1), local)
    return rgb, depth, ids, local


def _grid(size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss
    return np.meshgrid(c, c)


def render_frame(scene: ToyScene, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame t: colour (H,W,3 uint8, supersampled), distance and object ids (H,W) and the object-local
    coordinates (H,W,2) at pixel centres (what the flow is computed from)."""
    size = scene.size
    rgb, _, _, _ = _render_layer(scene, t, *_grid(size, SUPERSAMPLE))
    rgb = rgb.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    _, depth, ids, local = _render_layer(scene, t, *_grid(size, 1))
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), depth, ids, local


def render(scene: ToyScene) -> ToyClip:
    """Render every frame of `scene` with its ground truth."""
    n = scene.frames
    frames, depth, ids, locals_ = (np.stack(a) for a in zip(*(render_frame(scene, t) for t in range(n)), strict=True))
    masks = np.stack([ids == j for j in range(len(scene.objects))], axis=1)
    u1, v1 = _grid(scene.size, 1)
    flow = np.zeros((max(n - 1, 0), scene.size, scene.size, 2), np.float32)
    for t in range(n - 1):
        flow[t] = _flow(scene, t, u1, v1, ids[t], locals_[t])
    return ToyClip(scene, frames, depth, masks, ids, flow, [caption(scene, t) for t in range(n)])


def _flow(scene: ToyScene, t: int, u: np.ndarray, v: np.ndarray, ids: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Where the surface point seen at each pixel of frame t is in frame t+1, minus where it is now."""
    now, nxt = _Camera(scene, t), _Camera(scene, t + 1)
    x, y = now.to_world(u, v)
    u2, v2 = nxt.to_pixel(x, y)  # floor and backdrop are static in the world
    for i, o in enumerate(scene.objects):
        sel = ids == i
        if not sel.any():
            continue
        cx, cy, r, th = _object_pose(scene, o, t + 1)
        lu, lv = local[..., 0][sel], local[..., 1][sel]
        c, s = np.cos(th), np.sin(th)
        wx = cx + r * (c * lu - s * lv)
        wy = cy + r * (s * lu + c * lv)
        pu, pv = nxt.to_pixel(wx, wy)
        u2[sel], v2[sel] = pu, pv
    return np.stack([u2 - u, v2 - v], -1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Reading colours back (ground-truth measures of an edit)
# --------------------------------------------------------------------------------------------------

_HUES = {name: colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))[0] for name, rgb in COLOURS.items()}


def hsv(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (0-1), saturation and value of uint8 RGB pixels (..., 3), vectorised."""
    p = pixels.astype(np.float32) / 255.0
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    mx, mn = p.max(-1), p.min(-1)
    d = np.maximum(mx - mn, 1e-6)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    return h, (mx - mn) / np.maximum(mx, 1e-6), mx


def colour_of(pixels: np.ndarray) -> str | None:
    """The palette colour whose hue is nearest the median hue of the saturated pixels among
    `pixels` (N,3 uint8), or None when fewer than a tenth of them are saturated (grey, black)."""
    h, sat, value = hsv(pixels.reshape(-1, 3))
    keep = (sat > 0.45) & (value > 0.18)
    if keep.sum() < max(1, 0.1 * len(h)):
        return None
    # circular median via the mean direction, robust enough for one dominant hue
    ang = 2 * np.pi * h[keep]
    mean = np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()) / (2 * np.pi) % 1.0
    return min(_HUES, key=lambda n: min(abs(_HUES[n] - mean), 1 - abs(_HUES[n] - mean)))
