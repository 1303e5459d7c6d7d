"""The cameras that took the photos, drawn around the model: small frusta over CPU renders from above and the side.

The COLMAP model (``camera_poses``'s ``sparse``) is in its own world frame; the delivered mesh is in the +Y-up
viewer frame, ``x_viewer = viewer_from_model @ x_model``, a rotation the dense or radiance-field step recorded in
its summary.json (the mesh step's, or the models' when convert carries it on). Without that rotation the cameras
would be drawn askew, so they are not drawn and a note says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lazy_loader as lazy
from PIL import Image, ImageDraw

from kai_steps._colmap import find_model
from kai_steps._render import fit_eye, project, render

np = lazy.load("numpy")
pycolmap = lazy.load("pycolmap")

FRUSTUM = 0.05  # a frustum's depth, as a fraction of the largest side of the model or the cameras' spread
COLOUR = (230, 120, 0)  # orange: apart from the background's grey and the model's own colours
FOV = 36.0


@dataclass
class Camera:
    """One posed photo in the viewer frame: its centre and the four corners of its picture ``FRUSTUM`` ahead."""

    name: str
    center: np.ndarray
    corners: np.ndarray  # (4, 3): top-left, top-right, bottom-right, bottom-left


def viewer_from_model(*folders: Path | None) -> np.ndarray | None:
    """The 3x3 rotation recorded as ``viewer_from_model`` in the first of these folders' summary.json to hold it."""
    for folder in folders:
        summary = Path(folder) / "summary.json" if folder is not None else None
        if summary is None or not summary.is_file():
            continue
        try:
            rot = np.asarray(json.loads(summary.read_text()).get("viewer_from_model"), dtype=float)
        except (ValueError, TypeError, AttributeError):
            continue
        if rot.shape == (3, 3) and np.allclose(rot @ rot.T, np.eye(3), atol=1e-6):
            return rot
    return None


def load_cameras(sparse: Path, rotation: np.ndarray, size: float) -> list[Camera]:
    """Every posed image of the COLMAP model in ``sparse``, in the viewer frame, by name; frusta ``FRUSTUM`` of
    the model's ``size`` or the cameras' spread (the larger) deep. Raises ValueError naming the folder when it
    holds no readable model."""
    folder = find_model(sparse)
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as exc:  # pycolmap raises plain RuntimeErrors with long C++ messages
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot read the COLMAP model in {folder}: {first}") from None
    posed = []
    for img in sorted(rec.images.values(), key=lambda i: i.name):
        if not img.has_pose:
            continue
        pose = img.cam_from_world()
        R, t = pose.rotation.matrix(), np.asarray(pose.translation, dtype=float)
        cam = rec.cameras[img.camera_id]
        pixels = np.array([[0, 0], [cam.width, 0], [cam.width, cam.height], [0, cam.height]], dtype=float)
        rays = np.array([cam.cam_from_img(p) for p in pixels], dtype=float)  # normalised (x/z, y/z)
        posed.append((img.name, R, -R.T @ t, np.concatenate([rays, np.ones((4, 1))], axis=1)))
    # Sized to the whole scene, so that frusta on a ring far wider than the model still show.
    centres = np.array([c for _, _, c, _ in posed]).reshape(-1, 3)
    depth = FRUSTUM * max(size, float(np.ptp(centres, axis=0).max()) if len(posed) > 1 else 0.0)
    cams = []
    for name, R, centre, rays in posed:
        world = (rays * depth) @ R + centre  # x_world = R^T x_cam + centre
        cams.append(Camera(name, rotation @ centre, world @ rotation.T))
    return cams


def _draw(img: np.ndarray, cams: list[Camera], eye: np.ndarray, fwd: np.ndarray, up: np.ndarray) -> Image.Image:
    h, w = img.shape[:2]
    pic = Image.fromarray(img)
    draw = ImageDraw.Draw(pic)
    for cam in cams:
        pts, depth = project(np.vstack([cam.center, cam.corners]), eye, eye + fwd, up, FOV, w, h)
        if np.any(depth <= 0):
            continue
        c, corners = tuple(pts[0]), [tuple(p) for p in pts[1:]]
        for p in corners:
            draw.line([c, p], fill=COLOUR, width=2)
        draw.line([*corners, corners[0]], fill=COLOUR, width=2)
        draw.line([corners[0], corners[1]], fill=(150, 40, 0), width=3)  # the picture's top edge: which way is up
    return pic


def camera_pictures(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, cams: list[Camera],
                    width: int = 640, height: int = 480) -> dict[str, Image.Image]:
    """``cameras_above`` (looking down, the model's front at the bottom) and ``cameras_side`` (from the front,
    15 degrees up): the model rendered as in the previews, every camera's frustum drawn over it, all of the model
    and every camera in the picture."""
    used = np.asarray(vertices, dtype=np.float64)[np.unique(faces)]
    everything = np.vstack([used, *[np.vstack([c.center, c.corners]) for c in cams]])
    e = np.radians(15.0)
    views = {"cameras_above": (np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
             "cameras_side": (np.array([0.0, -np.sin(e), -np.cos(e)]), np.array([0.0, 1.0, 0.0]))}
    out = {}
    for name, (fwd, up) in views.items():
        eye = fit_eye(everything, fwd, up, FOV, width / height, 0.05)
        img = render(vertices, faces, colors, eye, eye + fwd, up=up, fov_deg=FOV, width=width, height=height)
        out[name] = _draw(img, cams, eye, fwd, up)
    return out
