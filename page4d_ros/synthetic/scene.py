"""Procedural dynamic scenes: layout, moving objects, an articulated walker and camera motions."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from page4d_ros.synthetic.render import (
    Box,
    Capsule,
    Ellipsoid,
    Environment,
    Lighting,
    PlacedShape,
    Renderer,
    Sphere,
    make_texture_atlas,
)
from page4d_ros.synthetic.sequence import DEFAULT_EPOCH_NS, DEFAULT_FRAME_ID, SyntheticSequence

GENERATOR_VERSION = 1
"""Bumped whenever the same arguments would render different frames (for caches of generated sequences)."""
CAMERA_MOTIONS = ("walk", "orbit", "rotate", "handheld", "static")
SCENES = ("room", "outdoor")
PATTERNS = ("plain", "checker", "tiles", "bricks", "stripes", "dots")
MAX_MOVERS = 8
MAX_FRAMES = 100_000
MAX_PIXELS = 4096 * 4096


def _yaw_rotation(yaw: float) -> np.ndarray:
    """Rotation about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of ``angle`` radians about a unit ``axis`` (Rodrigues)."""
    x, y, z = axis
    skew = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * skew + (1.0 - np.cos(angle)) * skew @ skew


def look_rotation(forward: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World-from-optical rotation looking along ``forward`` in a z-up world (x right, y down, z forward)."""
    z_axis = forward / np.linalg.norm(forward)
    x_axis = np.cross(z_axis, np.array([0.0, 0.0, 1.0]))
    x_norm = np.linalg.norm(x_axis)
    if x_norm < 1e-9:
        raise ValueError("cannot look straight up or down: the camera's right axis is undefined")
    x_axis /= x_norm
    y_axis = np.cross(z_axis, x_axis)
    rotation = np.stack([x_axis, y_axis, z_axis], axis=1)
    if roll:
        rotation = rotation @ _axis_angle(np.array([0.0, 0.0, 1.0]), roll)
    return rotation


def _frame_from_z(direction: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Rotation whose z column is ``direction`` and whose x column is ``side`` made orthogonal to it."""
    z_axis = direction / np.linalg.norm(direction)
    x_axis = side - z_axis * (side @ z_axis)
    x_axis /= np.linalg.norm(x_axis)
    return np.stack([x_axis, np.cross(z_axis, x_axis), z_axis], axis=1)


@dataclass
class EllipsePath:
    """Constant-speed-ish motion on an ellipse around the origin, heading along the tangent."""

    semi_axes: tuple[float, float]
    angular_speed: float
    phase: float

    def at(self, time: float) -> tuple[np.ndarray, float, float]:
        """Ground position ``[x, y]``, heading yaw and the distance travelled since time 0."""
        angle = self.phase + self.angular_speed * time
        a, b = self.semi_axes
        position = np.array([a * np.cos(angle), b * np.sin(angle)])
        tangent = np.array([-a * np.sin(angle), b * np.cos(angle)]) * np.sign(self.angular_speed)
        distance = abs(self.angular_speed * time) * 0.5 * (a + b)
        return position, float(np.arctan2(tangent[1], tangent[0])), distance


@dataclass
class Mover:
    """An independently moving object on an elliptic path: an articulated "walker" or a rigid "ball" (rolling,
    bouncing sphere), "crate" (floating, spinning box) or "drone" (hovering, turning ellipsoid)."""

    kind: str
    instance_id: int
    path: EllipsePath
    materials: tuple[int, ...]
    size: float
    params: dict[str, float] = field(default_factory=dict)

    def shapes(self, time: float) -> list[PlacedShape]:
        """The mover's primitives at ``time`` seconds."""
        ground, yaw, distance = self.path.at(time)
        if self.kind == "walker":
            return self._walker(ground, yaw, time)
        if self.kind == "ball":
            radius = self.size
            bounce = self.params["bounce"] * abs(np.sin(np.pi * self.params["bounce_rate"] * time))
            center = np.array([ground[0], ground[1], radius + bounce])
            roll_axis = _yaw_rotation(yaw) @ np.array([0.0, 1.0, 0.0])
            rotation = _axis_angle(roll_axis, distance / radius)
            return [PlacedShape(Sphere(radius), rotation, center, self.materials[0], self.instance_id)]
        if self.kind == "crate":
            half = (self.size, self.size * 0.8, self.size * 0.7)
            height = self.params["height"] + 0.1 * np.sin(2.0 * np.pi * 0.4 * time)
            spin = self.params["spin"] * time
            tumble = _axis_angle(np.array([1.0, 0.0, 0.0]), 0.5 * np.sin(0.7 * time))
            rotation = _yaw_rotation(yaw + spin) @ tumble
            center = np.array([ground[0], ground[1], height])
            return [PlacedShape(Box(half), rotation, center, self.materials[0], self.instance_id)]
        if self.kind != "drone":
            raise ValueError(f"unknown mover kind {self.kind!r}; use walker, ball, crate or drone")
        radii = (self.size * 1.4, self.size, self.size * 0.6)
        height = self.params["height"] + 0.15 * np.sin(2.0 * np.pi * 0.3 * time + 1.0)
        rotation = _yaw_rotation(yaw + self.params["spin"] * time) @ _axis_angle(
            np.array([0.0, 1.0, 0.0]), 0.3 * np.sin(1.3 * time)
        )
        center = np.array([ground[0], ground[1], height])
        return [PlacedShape(Ellipsoid(radii), rotation, center, self.materials[0], self.instance_id)]

    def _walker(self, ground: np.ndarray, yaw: float, time: float) -> list[PlacedShape]:
        """A person-like figure: ellipsoid torso, sphere head and capsule limbs swinging in a walk cycle."""
        height = self.size
        phase = 2.0 * np.pi * self.params["step_rate"] * time
        heading = _yaw_rotation(yaw)
        forward, left, up = heading[:, 0], heading[:, 1], np.array([0.0, 0.0, 1.0])
        base = np.array([ground[0], ground[1], 0.0])
        hip_height = 0.53 * height + 0.02 * np.cos(2.0 * phase)
        pelvis = base + up * hip_height
        shirt, trousers, skin = self.materials
        shapes: list[PlacedShape] = []

        def limb(start: np.ndarray, angle: float, length: float, radius: float, material: int) -> np.ndarray:
            direction = forward * np.sin(angle) - up * np.cos(angle)
            rotation = _frame_from_z(direction, left)
            shapes.append(PlacedShape(Capsule(length, radius), rotation, start, material, self.instance_id))
            return start + direction * length

        swing = self.params["swing"]
        for side, sign in ((1.0, 1.0), (-1.0, -1.0)):
            hip = pelvis + left * (0.09 * height * side)
            thigh_angle = sign * swing * np.sin(phase)
            knee_bend = 0.9 * swing * max(0.0, sign * np.cos(phase))
            knee = limb(hip, thigh_angle, 0.245 * height, 0.055 * height / 1.75, trousers)
            limb(knee, thigh_angle - knee_bend, 0.25 * height, 0.045 * height / 1.75, trousers)
            shoulder = pelvis + up * (0.28 * height) + left * (0.12 * height * side)
            arm_angle = -sign * 0.8 * swing * np.sin(phase)
            elbow = limb(shoulder, arm_angle, 0.17 * height, 0.04 * height / 1.75, shirt)
            limb(elbow, arm_angle + 0.35, 0.16 * height, 0.035 * height / 1.75, skin)
        torso_center = pelvis + up * (0.16 * height)
        torso_rotation = heading @ _axis_angle(np.array([0.0, 1.0, 0.0]), 0.05)
        torso = Ellipsoid((0.075 * height, 0.12 * height, 0.19 * height))
        shapes.append(PlacedShape(torso, torso_rotation, torso_center, shirt, self.instance_id))
        head_center = pelvis + up * (0.40 * height) + forward * 0.01
        head_rotation = heading @ _axis_angle(np.array([0.0, 0.0, 1.0]), 0.3 * np.sin(0.5 * phase))
        shapes.append(PlacedShape(Sphere(0.065 * height), head_rotation, head_center, skin, self.instance_id))
        return shapes


@dataclass
class CameraRig:
    """Camera trajectory generator for one of ``CAMERA_MOTIONS`` on a ring around the scene centre."""

    motion: str
    ring: tuple[float, float]
    height: float
    phase: float
    direction: float
    speed: float
    pitch_target: float
    shake: np.ndarray
    pan_period: float

    def pose(self, time: float) -> np.ndarray:
        """World-from-optical 4x4 pose at ``time`` seconds."""
        a, b = self.ring
        mean_radius = 0.5 * (a + b)
        if self.motion in ("walk", "orbit"):
            angle = self.phase + self.direction * self.speed * time / mean_radius
        else:
            angle = self.phase
        ground = np.array([a * np.cos(angle), b * np.sin(angle)])
        position = np.array([ground[0], ground[1], self.height])
        target = np.array([0.0, 0.0, self.pitch_target])
        roll = 0.0
        if self.motion == "walk":
            tangent = np.array([-a * np.sin(angle), b * np.cos(angle), 0.0]) * self.direction
            tangent /= np.linalg.norm(tangent)
            inward = -np.array([ground[0], ground[1], 0.0]) / np.linalg.norm(ground)
            step = 2.0 * np.pi * 1.8 * time
            position[2] += 0.015 * np.sin(step)
            roll = 0.015 * np.sin(0.5 * step)
            forward = tangent + 1.7 * inward
            forward[2] = (self.pitch_target - self.height) / 4.0
        elif self.motion == "rotate":
            yaw = np.arctan2(-ground[1], -ground[0]) + 0.6 * np.sin(2.0 * np.pi * time / self.pan_period)
            forward = np.array([np.cos(yaw), np.sin(yaw), (self.pitch_target - self.height) / 4.0])
        else:
            forward = target - position
        if self.motion == "handheld":
            # Sum of incommensurate sinusoids: smooth, non-repeating hand shake (translation and rotation).
            amplitudes, frequencies, phases = self.shake
            wobble = amplitudes * np.sin(2.0 * np.pi * frequencies * time + phases)
            position += wobble[:3] * 0.03
            forward = forward / np.linalg.norm(forward) + wobble[3:6] * 0.025
            roll = 0.02 * wobble[0]
        pose = np.eye(4)
        pose[:3, :3] = look_rotation(forward, roll)
        pose[:3, 3] = position
        return pose


@dataclass
class SceneLayout:
    """Everything that defines a generated scene apart from time."""

    renderer: Renderer
    static_shapes: list[PlacedShape]
    movers: list[Mover]
    rig: CameraRig
    K: np.ndarray


def default_intrinsics(
    rng: np.random.Generator, width: int, height: int, fov_deg: float | None
) -> np.ndarray:
    """Pinhole intrinsics of a horizontal field of view (random 55-85 deg when None), jittered centre."""
    fov = rng.uniform(55.0, 85.0) if fov_deg is None else fov_deg
    if not 10.0 <= fov <= 150.0:
        raise ValueError(f"fov_deg must be within [10, 150] degrees, got {fov}")
    fx = 0.5 * width / np.tan(np.radians(fov) / 2.0)
    fy = fx * rng.uniform(0.99, 1.01)
    cx = (width - 1) / 2.0 + rng.uniform(-0.02, 0.02) * width
    cy = (height - 1) / 2.0 + rng.uniform(-0.02, 0.02) * height
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _random_colors(rng: np.random.Generator, count: int, saturation: tuple[float, float]) -> np.ndarray:
    """``count`` RGB colours of random hue, the given saturation range and a mid-to-high value."""
    colors = [
        colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(0.45, 0.95))
        for _ in range(count)
    ]
    return np.asarray(colors)


def build_layout(
    rng: np.random.Generator,
    width: int,
    height: int,
    scene: str,
    camera_motion: str,
    num_movers: int,
    K: np.ndarray,
    camera_height: float | None,
) -> SceneLayout:
    """Draw a scene (surroundings, static objects, movers, lights, camera rig) from ``rng``."""
    half_x, half_y = rng.uniform(5.5, 7.0), rng.uniform(4.5, 5.5)
    # Materials 0-5: walls/ground, floor, ceiling; then static objects; then movers (3 per walker).
    num_static = int(rng.integers(5, 9))
    num_materials = 6 + num_static + 2 + 3 * num_movers
    colors = _random_colors(rng, num_materials, (0.15, 0.75))
    patterns = [PATTERNS[int(i)] for i in rng.integers(0, len(PATTERNS), num_materials)]
    texel = rng.uniform(0.008, 0.02, num_materials)
    if scene == "outdoor":
        colors[4] = colorsys.hsv_to_rgb(rng.uniform(0.2, 0.38), rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.7))
        patterns[4] = "plain"
        texel[4] = 0.03
    atlas = make_texture_atlas(rng, colors, patterns)
    environment = Environment(
        kind=scene,
        half_extent=(half_x, half_y),
        ceiling_height=rng.uniform(2.8, 3.4),
        wall_materials=(0, 1, 2, 3),
        floor_material=4,
        ceiling_material=5,
    )
    sun = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    lighting = Lighting(
        sun_direction=sun / np.linalg.norm(sun),
        sun_strength=0.3 if scene == "room" else 0.6,
        point_position=np.array([0.0, 0.0, environment.ceiling_height - 0.2]) if scene == "room" else None,
        point_strength=0.45,
        ambient=0.4,
    )
    renderer = Renderer(width, height, K, atlas, texel, environment, lighting)

    static_shapes = _static_objects(rng, scene, half_x, half_y, num_static, first_material=6)
    inner = (half_x - 2.7, half_y - 2.7)
    movers = _movers(rng, num_movers, inner, first_material=6 + num_static + 2)
    rig_height = rng.uniform(1.4, 1.7) if camera_height is None else camera_height
    if not 0.2 <= rig_height <= 2.5:
        raise ValueError(f"camera_height must be within [0.2, 2.5] m (ceiling clearance), got {rig_height}")
    rig = CameraRig(
        motion=camera_motion,
        ring=(half_x - 1.5, half_y - 1.5),
        height=rig_height,
        phase=rng.uniform(0, 2 * np.pi),
        direction=float(rng.choice([-1.0, 1.0])),
        speed=rng.uniform(0.9, 1.3) if camera_motion == "walk" else rng.uniform(0.5, 0.8),
        pitch_target=rng.uniform(0.6, 1.1),
        shake=np.stack([rng.uniform(0.4, 1.0, 6), rng.uniform(0.3, 2.5, 6), rng.uniform(0, 2 * np.pi, 6)]),
        pan_period=rng.uniform(5.0, 8.0),
    )
    return SceneLayout(renderer, static_shapes, movers, rig, K)


def _static_objects(
    rng: np.random.Generator, scene: str, half_x: float, half_y: float, count: int, first_material: int
) -> list[PlacedShape]:
    """Static objects: boxes by the walls (outdoors: beyond the camera ring), decor, a central table and,
    outdoors, distant buildings."""
    shapes: list[PlacedShape] = []
    for index in range(count):
        material = first_material + index
        size = np.array([rng.uniform(0.2, 0.45), rng.uniform(0.15, 0.4), rng.uniform(0.2, 0.7)])
        wall = int(rng.integers(0, 4))
        yaw = rng.uniform(-0.25, 0.25)
        if scene == "room":
            margin = float(np.max(size[:2])) + 0.03
            along_x = rng.uniform(-half_x + 0.6, half_x - 0.6)
            along_y = rng.uniform(-half_y + 0.6, half_y - 0.6)
            x, y = [
                (-half_x + margin, along_y),
                (half_x - margin, along_y),
                (along_x, -half_y + margin),
                (along_x, half_y - margin),
            ][wall]
        else:
            distance = rng.uniform(1.0, 6.0)
            angle = rng.uniform(0, 2 * np.pi)
            size *= rng.uniform(1.0, 3.0)
            x = (half_x + distance) * np.cos(angle)
            y = (half_y + distance) * np.sin(angle)
        center = np.array([x, y, size[2]])
        shapes.append(PlacedShape(Box(tuple(size)), _yaw_rotation(yaw), center, material))
        if index % 3 == 0:
            radius = float(min(size[0], size[1])) * 0.8
            top = center + np.array([0.0, 0.0, size[2] + radius])
            shapes.append(PlacedShape(Sphere(radius), _yaw_rotation(yaw), top, first_material + count))
    table_half = (rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.4))
    table_center = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), table_half[2]])
    shapes.append(
        PlacedShape(
            Box(table_half), _yaw_rotation(rng.uniform(0, np.pi)), table_center, first_material + count + 1
        )
    )
    if scene == "outdoor":
        # A ring of distant buildings gives the horizon structure and parallax.
        for angle in np.linspace(0, 2 * np.pi, int(rng.integers(6, 11)), endpoint=False):
            distance = rng.uniform(18.0, 35.0)
            half = (rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0), rng.uniform(3.0, 10.0))
            center = np.array([distance * np.cos(angle), distance * np.sin(angle), half[2]])
            material = first_material + int(rng.integers(0, count))
            shapes.append(
                PlacedShape(Box(half), _yaw_rotation(angle + rng.uniform(-0.3, 0.3)), center, material)
            )
    return shapes


def _movers(
    rng: np.random.Generator, count: int, inner: tuple[float, float], first_material: int
) -> list[Mover]:
    """``count`` movers on concentric elliptic paths inside ``inner``; the first one is a walker."""
    movers: list[Mover] = []
    rigid_kinds = ("ball", "crate", "drone")
    for index in range(count):
        scale = 0.5 + 0.5 * (index + 1) / count
        semi_axes = (inner[0] * scale, inner[1] * scale)
        kind = "walker" if index % 4 == 0 else rigid_kinds[(index - 1 - index // 4) % 3]
        speed = rng.uniform(0.6, 1.3) if kind == "walker" else rng.uniform(0.4, 1.5)
        angular_speed = float(rng.choice([-1.0, 1.0])) * speed / (0.5 * sum(semi_axes))
        path = EllipsePath(semi_axes, angular_speed, rng.uniform(0, 2 * np.pi))
        base = first_material + 3 * index
        if kind == "walker":
            size = rng.uniform(1.55, 1.9)
            params = {"step_rate": speed / (0.75 * size * 0.9), "swing": rng.uniform(0.35, 0.5)}
            materials: tuple[int, ...] = (base, base + 1, base + 2)
        elif kind == "ball":
            size = rng.uniform(0.18, 0.32)
            params = {"bounce": rng.uniform(0.0, 0.4), "bounce_rate": rng.uniform(0.6, 1.2)}
            materials = (base,)
        else:
            size = rng.uniform(0.18, 0.3)
            params = {"height": rng.uniform(0.6, 1.9), "spin": rng.uniform(-1.5, 1.5)}
            materials = (base,)
        movers.append(Mover(kind, index + 1, path, materials, size, params))
    return movers


def _check_arguments(
    seed: int,
    num_frames: int,
    width: int,
    height: int,
    camera_motion: str,
    scene: str,
    num_movers: int,
    fps: float,
) -> None:
    """Raise ValueError with a clear message for any out-of-range argument of ``generate_sequence``."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(num_frames, (int, np.integer)) or not 1 <= num_frames <= MAX_FRAMES:
        raise ValueError(f"num_frames must be an integer in [1, {MAX_FRAMES}], got {num_frames!r}")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or value < 8:
            raise ValueError(f"{name} must be an integer >= 8 pixels, got {value!r}")
    if width * height > MAX_PIXELS:
        raise ValueError(f"image size {width}x{height} exceeds the supported {MAX_PIXELS} pixels")
    if camera_motion not in CAMERA_MOTIONS:
        raise ValueError(f"camera_motion must be one of {CAMERA_MOTIONS}, got {camera_motion!r}")
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if not isinstance(num_movers, (int, np.integer)) or not 0 <= num_movers <= MAX_MOVERS:
        raise ValueError(f"num_movers must be an integer in [0, {MAX_MOVERS}], got {num_movers!r}")
    if not (np.isfinite(fps) and 0.1 <= fps <= 1000.0):
        raise ValueError(f"fps must be within [0.1, 1000], got {fps!r}")


def generate_sequence(
    seed: int,
    num_frames: int,
    width: int = 640,
    height: int = 480,
    *,
    camera_motion: str = "walk",
    scene: str = "room",
    num_movers: int = 3,
    fps: float = 30.0,
    fov_deg: float | None = None,
    K: np.ndarray | None = None,
    camera_height: float | None = None,
    start_time: float | None = None,
    start_stamp_ns: int = DEFAULT_EPOCH_NS,
    first_frame: int = 0,
    pixel_noise: float = 0.0,
    frame_id: str = DEFAULT_FRAME_ID,
) -> SyntheticSequence:
    """Render a deterministic dynamic sequence with exact ground truth.

    Args:
        seed: selects everything random (layout, textures, paths, intrinsics); same seed, same frames.
        num_frames: number of frames.
        width: image width in pixels.
        height: image height in pixels.
        camera_motion: "walk" (along a loop around the centre at walking speed with head bob, looking ahead
            and about 60 degrees inwards), "orbit" (around the centre, looking at it),
            "rotate" (pure panning rotation about the optical centre), "handheld" (fixed spot with shake) or
            "static".
        scene: "room" (textured walls, floor, ceiling) or "outdoor" (ground plane and sky, depth 0 on sky).
        num_movers: independently moving objects (0-8); movers 1, 5 are articulated walkers, the others rigid.
        fps: frame rate; stamps are ``start_stamp_ns + round(i * 1e9 / fps)``.
        fov_deg: horizontal field of view (random in 55-85 deg from the seed when None).
        K: explicit 3x3 intrinsics for the given width/height (overrides ``fov_deg``).
        camera_height: camera height above the floor in metres (random 1.4-1.7 when None).
        start_time: scene time of frame 0 in seconds (random in 0-20 s from the seed when None).
        start_stamp_ns: stamp of frame 0.
        first_frame: index of the first frame to render: ``generate_sequence(s, n, first_frame=k)`` equals
            frames ``k..k+n-1`` of a longer sequence with the same arguments (for rendering in chunks).
        pixel_noise: standard deviation of Gaussian sensor noise in 8-bit levels (0 = none).
        frame_id: the optical frame name stored in the sequence.

    Returns:
        A ``SyntheticSequence`` with every array filled.
    """
    _check_arguments(seed, num_frames, width, height, camera_motion, scene, num_movers, fps)
    if not isinstance(first_frame, (int, np.integer)) or first_frame < 0:
        raise ValueError(f"first_frame must be a non-negative integer, got {first_frame!r}")
    if not (np.isfinite(pixel_noise) and pixel_noise >= 0):
        raise ValueError(f"pixel_noise must be a finite value >= 0, got {pixel_noise!r}")
    rng = np.random.default_rng(int(seed))
    intrinsics = default_intrinsics(rng, width, height, fov_deg)
    if K is not None:
        intrinsics = np.asarray(K, dtype=np.float64)
        if intrinsics.shape != (3, 3) or not np.all(np.isfinite(intrinsics)) or intrinsics[0, 0] <= 0:
            raise ValueError("K must be a finite 3x3 intrinsics matrix with positive focal lengths")
    layout = build_layout(
        rng, width, height, scene, camera_motion, int(num_movers), intrinsics, camera_height
    )
    time0 = rng.uniform(0.0, 20.0) if start_time is None else float(start_time)

    rgb = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    depth = np.empty((num_frames, height, width), dtype=np.float32)
    instance_ids = np.empty((num_frames, height, width), dtype=np.int32)
    poses = np.empty((num_frames, 4, 4))
    for index in range(num_frames):
        frame = first_frame + index
        time = time0 + frame / fps
        poses[index] = layout.rig.pose(time)
        shapes = list(layout.static_shapes)
        for mover in layout.movers:
            shapes.extend(mover.shapes(time))
        rgb[index], depth[index], instance_ids[index] = layout.renderer.render(poses[index], shapes)
        if pixel_noise > 0:
            noise_rng = np.random.default_rng([int(seed), frame])
            noisy = rgb[index] + noise_rng.normal(0.0, pixel_noise, rgb[index].shape)
            rgb[index] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    frames = np.arange(first_frame, first_frame + num_frames)
    stamps = int(start_stamp_ns) + np.rint(frames * (1e9 / fps)).astype(np.int64)
    return SyntheticSequence(
        rgb=rgb,
        depth=depth,
        dynamic_mask=instance_ids > 0,
        instance_ids=instance_ids,
        T_world_cam=poses,
        K=np.repeat(intrinsics[None], num_frames, axis=0),
        stamps_ns=stamps,
        frame_id=frame_id,
        fps=float(fps),
        seed=int(seed),
        camera_motion=camera_motion,
        scene=scene,
        camera_height=float(layout.rig.height),
        metadata={
            "num_movers": int(num_movers),
            "mover_kinds": [mover.kind for mover in layout.movers],
            "start_time": time0,
            "pixel_noise": float(pixel_noise),
            "first_frame": int(first_frame),
            "generator_version": GENERATOR_VERSION,
        },
    )


__all__ = ["CAMERA_MOTIONS", "GENERATOR_VERSION", "SCENES", "generate_sequence", "look_rotation"]
