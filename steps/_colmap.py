"""Reading posed views out of a COLMAP model: find the model, undistort the images, hand back pinhole views."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import lazy_loader as lazy

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
cv2 = lazy.load("cv2")
np = lazy.load("numpy")
pycolmap = lazy.load("pycolmap")


MODEL_FILES = ("cameras", "images", "points3D")


class ReconstructionInputError(ValueError):
    """An input artifact of a reconstruction step is missing, empty or unusable (one-line message)."""


def _is_model(folder: Path) -> bool:
    return any(all((folder / f"{n}.{ext}").is_file() for n in MODEL_FILES) for ext in ("bin", "txt"))


def find_model(sparse: Path) -> Path:
    """The folder holding the COLMAP model: ``sparse`` itself or its first numbered sub-folder (``sparse/0``)."""
    sparse = Path(sparse)
    if not sparse.is_dir():
        raise ReconstructionInputError(f"sparse model folder {sparse} does not exist")
    if _is_model(sparse):
        return sparse
    subs = sorted((d for d in sparse.iterdir() if d.is_dir() and _is_model(d)), key=lambda d: (not d.name.isdigit(),
                                                                                               d.name.zfill(9)))
    if not subs:
        raise ReconstructionInputError(
            f"{sparse} holds no COLMAP model (cameras/images/points3D .bin or .txt, directly or in sparse/0)")
    return subs[0]


def load_model(sparse: Path) -> pycolmap.Reconstruction:
    folder = find_model(sparse)
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as exc:  # pycolmap raises plain RuntimeErrors with long C++ messages
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReconstructionInputError(f"cannot read the COLMAP model in {folder}: {first}") from None
    if rec.num_reg_images() < 2:
        raise ReconstructionInputError(f"the COLMAP model in {folder} has {rec.num_reg_images()} posed images; "
                                       "dense geometry needs at least 2")
    return rec


@dataclass
class View:
    """One undistorted pinhole view: world-to-camera ``x_cam = R x + t``; ``K`` in OpenCV's pixel convention
    (pixel centres at integers); ``image`` is RGB uint8."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    image: np.ndarray
    point_ids: frozenset[int]

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t

    @property
    def axis(self) -> np.ndarray:
        return self.R[2]


@dataclass
class PosedViews:
    views: list[View]
    points: np.ndarray  # sparse points (N, 3), possibly empty
    point_index: dict[int, int]  # point3D id -> row in ``points``


def image_folder(images: Path) -> Path:
    """Where the photos are: ``images/images`` in a preprocess output (beside camera_prior.json), else ``images``."""
    images = Path(images)
    nested = images / "images"
    return nested if nested.is_dir() and (images / "camera_prior.json").is_file() else images


def load_views(images: Path, sparse: Path, max_image_size: int) -> PosedViews:
    """Undistort every posed image of the model (pycolmap) to pinhole views of at most ``max_image_size`` pixels."""
    images = image_folder(images)
    rec = load_model(sparse)
    posed = [img for img in rec.images.values() if img.has_pose]
    missing = [img.name for img in posed if not (images / img.name).is_file()]
    if missing:
        raise ReconstructionInputError(f"{len(missing)} posed images of the model are not in {images}: "
                                       f"{', '.join(missing[:5])}")
    with tempfile.TemporaryDirectory(prefix="kai-undistort-") as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        rec.write(str(model_dir))
        out = Path(tmp) / "undistorted"
        opts = pycolmap.UndistortCameraOptions(max_image_size=max_image_size)
        pycolmap.undistort_images(str(out), str(model_dir), str(images), output_type="COLMAP",
                                  undistort_options=opts)
        und = pycolmap.Reconstruction(str(out / "sparse"))
        views = []
        for img in sorted(und.images.values(), key=lambda i: i.name):
            if not img.has_pose:
                continue
            bgr = cv2.imread(str(out / "images" / img.name), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ReconstructionInputError(f"cannot decode image {images / img.name}")
            pose = img.cam_from_world()
            pids = frozenset(p.point3D_id for p in img.points2D if p.has_point3D())
            # COLMAP puts pixel centres at +0.5; OpenCV and Open3D at integers.
            K = und.cameras[img.camera_id].calibration_matrix() - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
            views.append(View(img.name, K, pose.rotation.matrix(),
                              np.asarray(pose.translation, dtype=float), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pids))
    ids = sorted(rec.points3D)
    pts = np.array([rec.points3D[i].xyz for i in ids], dtype=float).reshape(-1, 3)
    return PosedViews(views, pts, {pid: k for k, pid in enumerate(ids)})


def strecha_cameras_dir(dataset: Path) -> Path:
    for sub in ("gt_dense_cameras", "gt_cameras"):
        if (Path(dataset) / sub).is_dir():
            return Path(dataset) / sub
    raise ReconstructionInputError(f"{dataset} has no gt_dense_cameras/ or gt_cameras/ folder of .camera files")


def strecha_model(dataset: Path, out: Path, names: list[str] | None = None, scale: float = 1.0) -> Path:
    """A posed COLMAP model (no points) from a Strecha-format set (``images/`` and ``gt_dense_cameras/`` or the
    sample scene's ``gt_cameras/``), images resized by ``scale``: ``out/images`` and ``out/sparse``. For tests and
    benchmarks with exact poses."""
    from kai_steps._metrics import read_strecha_dir

    dataset, out = Path(dataset), Path(out)
    cams = read_strecha_dir(strecha_cameras_dir(dataset))
    names = names or sorted(cams)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "sparse").mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    for cid, name in enumerate(names, start=1):
        c = cams[name]
        w, h = round(c.width * scale), round(c.height * scale)
        img = cv2.imread(str(dataset / "images" / name), cv2.IMREAD_COLOR)
        if img is None:
            raise ReconstructionInputError(f"cannot decode {dataset / 'images' / name}")
        cv2.imwrite(str(out / "images" / name), cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
        sx, sy = w / c.width, h / c.height
        # K is taken in COLMAP's convention (pixel centres at +0.5, as the sample scene renders), so it scales as is.
        params = [c.K[0, 0] * sx, c.K[1, 1] * sy, c.K[0, 2] * sx, c.K[1, 2] * sy]
        rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=w, height=h, params=params,
                                                        camera_id=cid))
        R = c.R.T  # Strecha R is camera-to-world
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=cid, image_id=cid),
                                         pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ c.C))
    rec.write(str(out / "sparse"))
    return out
