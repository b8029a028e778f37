"""Vectorised ray casting of analytic primitives with procedural textures and Lambertian shading.

Every pixel casts one ray through its centre, ``d_cam = K^-1 [u, v, 1]``. Because ``d_cam`` has unit z, the
ray parameter ``t`` of a hit *is* the z-depth, so depth, pose, K and colour agree exactly by construction.
Shapes are intersected in their own local frame (rigid transforms leave ``t`` unchanged), and each shape is
only tested on the screen rectangle that its bounding sphere projects to, which keeps a 640x480 frame well
under 100 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_T = 1e-4
"""Smallest accepted hit distance (z-depth), so a surface never hits itself."""
TEXTURE_SIZE = 256
"""Texels per side of every material texture (a power of two, so wrapping is a bit mask)."""
MAX_GROUND_DEPTH = 150.0
"""Outdoors the ground plane ends at this z-depth; farther rays see the sky (depth 0)."""


class Shape:
    """An analytic solid in its local frame: ray intersection, surface normal and texture coordinates."""

    bounding_radius: float
    bounding_center: np.ndarray

    def intersect(self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """Ray parameter of the nearest hit beyond ``NEAR_T`` (inf on a miss), one origin, many directions."""
        raise NotImplementedError

    def normal_uv(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outward unit normals ``[N, 3]`` and metric texture coordinates ``[N, 2]`` at local points."""
        raise NotImplementedError


def _nearest_root(b: np.ndarray, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """Smallest root above NEAR_T of ``a t^2 + 2 b t + c = 0`` (inf when there is none)."""
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(disc)
        t_near = (-b - root) / a
        t_far = (-b + root) / a
    t = np.where(t_near > NEAR_T, t_near, t_far)
    return np.where((disc >= 0) & (t > NEAR_T), t, np.inf)


@dataclass
class Sphere(Shape):
    """A sphere of ``radius`` centred on the local origin."""

    radius: float

    def __post_init__(self) -> None:
        self.bounding_radius = self.radius
        self.bounding_center = np.zeros(3)

    def intersect(self, origin, dx, dy, dz):
        """See ``Shape.intersect``."""
        a = dx * dx + dy * dy + dz * dz
        b = origin[0] * dx + origin[1] * dy + origin[2] * dz
        c = float(origin @ origin) - self.radius**2
        return _nearest_root(b, a, c)

    def normal_uv(self, points):
        """See ``Shape.normal_uv``."""
        normals = points / np.linalg.norm(points, axis=1, keepdims=True)
        longitude = np.arctan2(points[:, 1], points[:, 0]) * self.radius
        return normals, np.stack([longitude, points[:, 2]], axis=1)


@dataclass
class Ellipsoid(Shape):
    """An axis-aligned ellipsoid with semi-axes ``radii`` centred on the local origin."""

    radii: tuple[float, float, float]

    def __post_init__(self) -> None:
        self.bounding_radius = float(max(self.radii))
        self.bounding_center = np.zeros(3)
        self._inverse = 1.0 / np.asarray(self.radii, dtype=np.float64)

    def intersect(self, origin, dx, dy, dz):
        """See ``Shape.intersect``: scaling space by 1/radii maps it to the unit sphere and keeps ``t``."""
        ix, iy, iz = self._inverse
        sx, sy, sz = dx * ix, dy * iy, dz * iz
        scaled_origin = origin * self._inverse
        a = sx * sx + sy * sy + sz * sz
        b = scaled_origin[0] * sx + scaled_origin[1] * sy + scaled_origin[2] * sz
        return _nearest_root(b, a, float(scaled_origin @ scaled_origin) - 1.0)

    def normal_uv(self, points):
        """See ``Shape.normal_uv``."""
        gradient = points * self._inverse**2
        normals = gradient / np.linalg.norm(gradient, axis=1, keepdims=True)
        mean_radius = float(np.mean(self.radii[:2]))
        longitude = np.arctan2(points[:, 1] * self._inverse[1], points[:, 0] * self._inverse[0]) * mean_radius
        return normals, np.stack([longitude, points[:, 2]], axis=1)


@dataclass
class Box(Shape):
    """An axis-aligned box with half extents ``half`` centred on the local origin (slab test)."""

    half: tuple[float, float, float]

    def __post_init__(self) -> None:
        self.bounding_radius = float(np.linalg.norm(self.half))
        self.bounding_center = np.zeros(3)
        self._half = np.asarray(self.half, dtype=np.float64)

    def intersect(self, origin, dx, dy, dz):
        """See ``Shape.intersect``."""
        t_enter = t_exit = None
        # A zero direction component gives +-inf slab distances (the ray is inside or outside that slab
        # forever); fmax/fmin skip the NaN of the measure-zero case "ray exactly on a slab plane".
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, direction in enumerate((dx, dy, dz)):
                inverse = 1.0 / direction
                t_a = (-self._half[axis] - origin[axis]) * inverse
                t_b = (self._half[axis] - origin[axis]) * inverse
                near = np.fmin(t_a, t_b)
                far = np.fmax(t_a, t_b, out=t_a)
                t_enter = near if t_enter is None else np.fmax(t_enter, near, out=t_enter)
                t_exit = far if t_exit is None else np.fmin(t_exit, far, out=t_exit)
        t = np.where(t_enter > NEAR_T, t_enter, t_exit)
        return np.where((t_exit >= t_enter) & (t > NEAR_T), t, np.inf)

    def normal_uv(self, points):
        """See ``Shape.normal_uv``: the face is the axis where the point is relatively farthest out."""
        relative = points / self._half
        axis = np.argmax(np.abs(relative), axis=1)
        rows = np.arange(len(points))
        normals = np.zeros_like(points)
        normals[rows, axis] = np.sign(relative[rows, axis])
        u_axis = (axis + 1) % 3
        v_axis = (axis + 2) % 3
        # Each face gets its own offset so opposite faces do not show the same texture patch.
        face_offset = (axis * 2 + (normals[rows, axis] > 0)) * 0.37
        uv = np.stack([points[rows, u_axis] + face_offset, points[rows, v_axis] + face_offset], axis=1)
        return normals, uv


@dataclass
class Capsule(Shape):
    """A capsule of ``radius`` around the local z axis segment from 0 to ``length``."""

    length: float
    radius: float

    def __post_init__(self) -> None:
        self.bounding_radius = self.length / 2.0 + self.radius
        self.bounding_center = np.array([0.0, 0.0, self.length / 2.0])

    def intersect(self, origin, dx, dy, dz):
        """See ``Shape.intersect``: nearest of the lateral cylinder (within the segment) and end spheres."""
        ox, oy, oz = origin
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        t_cylinder = _nearest_root(b, a, ox * ox + oy * oy - self.radius**2)
        with np.errstate(invalid="ignore"):
            z = oz + t_cylinder * dz
        t_cylinder = np.where((z >= 0.0) & (z <= self.length), t_cylinder, np.inf)
        a_full = a + dz * dz
        r2 = self.radius**2
        t_start = _nearest_root(b + oz * dz, a_full, float(origin @ origin) - r2)
        oz_end = oz - self.length
        t_end = _nearest_root(b + oz_end * dz, a_full, ox * ox + oy * oy + oz_end * oz_end - r2)
        return np.minimum(t_cylinder, np.minimum(t_start, t_end))

    def normal_uv(self, points):
        """See ``Shape.normal_uv``."""
        axis_points = np.zeros_like(points)
        axis_points[:, 2] = np.clip(points[:, 2], 0.0, self.length)
        radial = points - axis_points
        normals = radial / np.linalg.norm(radial, axis=1, keepdims=True)
        around = np.arctan2(points[:, 1], points[:, 0]) * self.radius
        return normals, np.stack([around, points[:, 2]], axis=1)


@dataclass
class PlacedShape:
    """A shape at a world pose for one frame, with its material and instance id (0 = static world)."""

    shape: Shape
    rotation: np.ndarray
    translation: np.ndarray
    material: int
    instance_id: int = 0


@dataclass
class Environment:
    """What surrounds the scene: an inside-of-a-box room, or an infinite ground plane under a sky."""

    kind: str
    half_extent: tuple[float, float]
    ceiling_height: float
    wall_materials: tuple[int, int, int, int]
    floor_material: int
    ceiling_material: int
    sky_top: tuple[float, float, float] = (0.35, 0.55, 0.9)
    sky_horizon: tuple[float, float, float] = (0.8, 0.87, 0.95)


@dataclass
class Lighting:
    """A directional light, an optional point light and a hemisphere ambient term."""

    sun_direction: np.ndarray
    sun_strength: float
    point_position: np.ndarray | None
    point_strength: float
    ambient: float


def make_texture_atlas(rng: np.random.Generator, base_colors: np.ndarray, patterns: list[str]) -> np.ndarray:
    """Tileable albedo textures ``[M, T, T, 3]`` float32 in [0, 1], one per material.

    Each texture is a base colour modulated by periodic fractal noise (white noise filtered with a 1/f
    spectrum in the Fourier domain, hence seamlessly tiling), tinted towards a second colour by another noise
    field, and a pattern: "plain", "checker", "tiles", "bricks", "stripes" or "dots".
    """
    size = TEXTURE_SIZE
    count = len(base_colors)
    radial = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    radial[0, 0] = 1.0
    spectrum_filter = (radial**-1.6).astype(np.float32)
    spectrum_filter[0, 0] = 0.0
    white = rng.standard_normal((count, 2, size, size), dtype=np.float32)
    fields = np.fft.irfft2(np.fft.rfft2(white) * spectrum_filter, s=(size, size)).astype(np.float32)
    fields /= fields.std(axis=(2, 3), keepdims=True) + 1e-12
    coords = np.arange(size, dtype=np.float32) / size
    grid_u, grid_v = np.meshgrid(coords, coords)
    atlas = np.empty((count, size, size, 3), dtype=np.float32)
    for index, (color, pattern) in enumerate(zip(base_colors, patterns)):
        cells = int(rng.integers(2, 9))
        if pattern == "checker":
            mask = (np.floor(grid_u * cells) + np.floor(grid_v * cells)) % 2
        elif pattern == "tiles":
            mask = (grid_u * cells % 1 < 0.06) | (grid_v * cells % 1 < 0.06)
        elif pattern == "bricks":
            shifted = grid_u * cells + 0.5 * (np.floor(grid_v * cells * 2) % 2)
            mask = (shifted % 1 < 0.05) | (grid_v * cells * 2 % 1 < 0.1)
        elif pattern == "stripes":
            mask = np.sin(2 * np.pi * grid_u * cells) > 0.3
        elif pattern == "dots":
            du = grid_u * cells % 1 - 0.5
            dv = grid_v * cells % 1 - 0.5
            mask = du * du + dv * dv < 0.07
        else:
            mask = np.zeros((size, size), dtype=np.float32)
        contrast = np.float32(rng.uniform(0.25, 0.55))
        luminance = (1.0 - contrast * mask.astype(np.float32)) * (1.0 + 0.22 * fields[index, 0])
        second_color = np.clip(np.asarray(color) + rng.normal(0.0, 0.12, 3), 0.0, 1.0).astype(np.float32)
        tint = np.clip(0.5 + 0.25 * fields[index, 1], 0.0, 1.0)[..., None]
        albedo = (np.asarray(color, dtype=np.float32) * (1 - tint) + second_color * tint) * luminance[
            ..., None
        ]
        atlas[index] = np.clip(albedo, 0.02, 1.0)
    return atlas


class Renderer:
    """Renders frames of a scene for a fixed image size and intrinsics.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        K: 3x3 intrinsics.
        atlas: ``[M, T, T, 3]`` albedo textures.
        texel_size: ``[M]`` metres per texel for each material.
        environment: the room or outdoor surroundings.
        lighting: the lights (constant over time, so static surfaces keep their colour).
    """

    def __init__(
        self,
        width: int,
        height: int,
        K: np.ndarray,
        atlas: np.ndarray,
        texel_size: np.ndarray,
        environment: Environment,
        lighting: Lighting,
    ) -> None:
        self.width = width
        self.height = height
        self.K = np.asarray(K, dtype=np.float64)
        self.atlas_rgba = np.zeros((atlas.shape[0] * atlas.shape[1] * atlas.shape[2], 4), dtype=np.float32)
        self.atlas_rgba[:, :3] = atlas.reshape(-1, 3)
        self.texels_per_metre = (1.0 / np.asarray(texel_size)).astype(np.float32)
        self.environment = environment
        self.lighting = lighting
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        skew = self.K[0, 1]
        y_cam = (v - cy) / fy
        self.rays_cam = np.stack([(u - cx - skew * y_cam) / fx, y_cam, np.ones_like(u)], axis=-1).reshape(
            -1, 3
        )

    def render(
        self, T_world_cam: np.ndarray, shapes: list[PlacedShape]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render one frame: rgb ``[H, W, 3]`` uint8, depth ``[H, W]`` float32 (0 = none), int32 ids."""
        height, width = self.height, self.width
        rotation = T_world_cam[:3, :3]
        origin = T_world_cam[:3, 3].copy()
        rays = self.rays_cam @ rotation.T
        rays_image = rays.reshape(height, width, 3)
        depth, surface = self._environment_hits(origin, rays[:, 0], rays[:, 1], rays[:, 2])
        hit_index = np.full(depth.shape, -1, dtype=np.int32)
        depth_image = depth.reshape(height, width)
        hit_image = hit_index.reshape(height, width)
        windows: list[tuple[slice, slice] | None] = []
        for index, placed in enumerate(shapes):
            window = self._screen_window(placed, rotation, origin)
            windows.append(window)
            if window is None:
                continue
            local_origin = placed.rotation.T @ (origin - placed.translation)
            local = rays_image[window] @ placed.rotation
            t = placed.shape.intersect(local_origin, local[..., 0], local[..., 1], local[..., 2])
            closer = t < depth_image[window]
            np.copyto(depth_image[window], t, where=closer)
            np.copyto(hit_image[window], index, where=closer)

        # G-buffer of flat per-pixel material, metric texture coordinates and world normal. The environment is
        # evaluated on every pixel (cheaper than gathering its subset), then shapes overwrite their own
        # pixels.
        hit = np.isfinite(depth)
        points = origin + rays * np.where(hit, depth, 0.0)[:, None]
        material, uv, normals = self._environment_gbuffer(points, surface)
        instance_ids = np.zeros(depth.shape, dtype=np.int32)
        for index, placed in enumerate(shapes):
            window = windows[index]
            if window is None:
                continue
            rows, cols = np.nonzero(hit_image[window] == index)
            if len(rows) == 0:
                continue
            pixels = (rows + window[0].start) * width + cols + window[1].start
            local_points = (np.take(points, pixels, axis=0) - placed.translation) @ placed.rotation
            local_normals, local_uv = placed.shape.normal_uv(local_points)
            normals[pixels] = local_normals @ placed.rotation.T
            uv[pixels] = local_uv
            material[pixels] = placed.material
            instance_ids[pixels] = placed.instance_id

        color = self._sample_texture(material, uv) * self._shade(points, normals)[:, None]
        sky = np.flatnonzero(~hit)
        if len(sky):
            color[sky] = self._sky_color(np.take(rays, sky, axis=0))
        rgb = np.clip(color * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8).reshape(height, width, 3)
        depth_out = np.where(hit, depth, 0.0).astype(np.float32).reshape(height, width)
        return rgb, depth_out, instance_ids.reshape(height, width)

    def _screen_window(
        self, placed: PlacedShape, rotation: np.ndarray, origin: np.ndarray
    ) -> tuple[slice, slice] | None:
        """Pixel rectangle that contains the projection of the shape's bounding sphere (None: not visible)."""
        center_world = placed.translation + placed.rotation @ placed.shape.bounding_center
        center = rotation.T @ (center_world - origin)
        radius = placed.shape.bounding_radius * 1.001 + 1e-6
        z_near, z_far = center[2] - radius, center[2] + radius
        if z_far <= NEAR_T:
            return None
        if z_near <= 0.01:
            return slice(0, self.height), slice(0, self.width)
        # Over the bounding cube x/z and y/z are extremal at its corners, so these bounds are conservative.
        x_low = min((center[0] - radius) / z_near, (center[0] - radius) / z_far)
        x_high = max((center[0] + radius) / z_near, (center[0] + radius) / z_far)
        y_low = min((center[1] - radius) / z_near, (center[1] - radius) / z_far)
        y_high = max((center[1] + radius) / z_near, (center[1] + radius) / z_far)
        fx, fy, cx, cy, skew = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2], self.K[0, 1]
        v_low, v_high = fy * y_low + cy, fy * y_high + cy
        skew_terms = (skew * y_low, skew * y_high)
        u_low = fx * x_low + cx + min(skew_terms)
        u_high = fx * x_high + cx + max(skew_terms)
        col0 = max(int(np.floor(u_low)), 0)
        col1 = min(int(np.ceil(u_high)) + 1, self.width)
        row0 = max(int(np.floor(v_low)), 0)
        row1 = min(int(np.ceil(v_high)) + 1, self.height)
        if col0 >= col1 or row0 >= row1:
            return None
        return slice(row0, row1), slice(col0, col1)

    def _environment_hits(
        self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Depth to the room's inner walls (or the ground) and which surface was hit.

        Surfaces: 0..3 walls (-x, +x, -y, +y), 4 floor, 5 ceiling; -1 sky.
        """
        env = self.environment
        with np.errstate(divide="ignore", invalid="ignore"):
            if env.kind == "outdoor":
                t_floor = np.where(dz < 0, -origin[2] / dz, np.inf)
                t_floor = np.where(t_floor <= MAX_GROUND_DEPTH, t_floor, np.inf)
                surface = np.where(np.isfinite(t_floor), 4, -1).astype(np.int8)
                return t_floor, surface
            half_x, half_y = env.half_extent
            # Inside the room each ray leaves through the facing wall in x or in y, or the floor/ceiling.
            t_x = np.where(dx < 0, (-half_x - origin[0]) / dx, (half_x - origin[0]) / dx)
            t_y = np.where(dy < 0, (-half_y - origin[1]) / dy, (half_y - origin[1]) / dy)
            t_z = np.where(dz < 0, -origin[2] / dz, (env.ceiling_height - origin[2]) / dz)
        t_x[dx == 0] = np.inf
        t_y[dy == 0] = np.inf
        t_z[dz == 0] = np.inf
        depth = np.minimum(np.minimum(t_x, t_y), t_z)
        surface = np.where(
            depth == t_x,
            (dx > 0).astype(np.int8),
            np.where(depth == t_y, 2 + (dy > 0).astype(np.int8), 4 + (dz > 0).astype(np.int8)),
        ).astype(np.int8)
        return depth, surface

    def _environment_gbuffer(
        self, points: np.ndarray, surface: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Material ``[N]``, texture coordinates ``[N, 2]`` and inward normals ``[N, 3]`` of the environment.

        Surface codes 0..5 are the walls -x, +x, -y, +y, the floor and the ceiling; sky pixels (-1) get floor
        values that the caller overwrites.
        """
        env = self.environment
        codes = np.maximum(surface, 0).astype(np.intp)
        surface_normals = np.array(
            [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64
        )
        materials = np.array([*env.wall_materials, env.floor_material, env.ceiling_material], dtype=np.intp)
        uv = np.empty((len(codes), 2), dtype=np.float32)
        uv[:, 0] = np.where(codes < 2, points[:, 1], points[:, 0])
        uv[:, 1] = np.where(codes < 4, points[:, 2], points[:, 1])
        return np.take(materials, codes), uv, np.take(surface_normals, codes, axis=0)

    def _sample_texture(self, material: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Bilinear, wrapping lookup of metric texture coordinates ``[N, 2]`` in per-pixel materials ``[N]``.

        The atlas is stored as RGBA float32 rows and read with ``np.take``: 16-byte rows gather several times
        faster than 12-byte ones or than fancy indexing.
        """
        size = TEXTURE_SIZE
        coords = uv * np.take(self.texels_per_metre, material)[:, None]
        base = np.floor(coords)
        frac = coords - base
        base_int = base.astype(np.int32)
        x0 = base_int[:, 0] & (size - 1)
        x1 = (x0 + 1) & (size - 1)
        offset = material.astype(np.int32) * (size * size)
        row0 = offset + (base_int[:, 1] & (size - 1)) * size
        row1 = offset + ((base_int[:, 1] + 1) & (size - 1)) * size
        atlas = self.atlas_rgba
        fu = frac[:, 0:1]
        fv = frac[:, 1:2]
        top = np.take(atlas, row0 + x0, axis=0) * (1 - fu) + np.take(atlas, row0 + x1, axis=0) * fu
        bottom = np.take(atlas, row1 + x0, axis=0) * (1 - fu) + np.take(atlas, row1 + x1, axis=0) * fu
        return (top * (1 - fv) + bottom * fv)[:, :3]

    def _shade(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Lambertian shading ``[N]`` float32: hemisphere ambient, directional and optional point light."""
        light = self.lighting
        shade = light.ambient * (0.8 + 0.2 * normals[:, 2])
        shade += light.sun_strength * np.clip(normals @ light.sun_direction, 0.0, None)
        if light.point_position is not None:
            to_light = light.point_position - points
            distance_sq = np.einsum("ni,ni->n", to_light, to_light)
            cosine = np.einsum("ni,ni->n", normals, to_light) / np.sqrt(distance_sq + 1e-12)
            shade += light.point_strength * np.clip(cosine, 0.0, None) / (1.0 + 0.04 * distance_sq)
        return shade.astype(np.float32)

    def _sky_color(self, rays: np.ndarray) -> np.ndarray:
        """Vertical gradient from the horizon colour to the zenith colour."""
        elevation = np.clip(rays[:, 2] / np.linalg.norm(rays, axis=1), 0.0, 1.0)[:, None] ** 0.6
        top = np.asarray(self.environment.sky_top)
        horizon = np.asarray(self.environment.sky_horizon)
        return horizon * (1 - elevation) + top * elevation
