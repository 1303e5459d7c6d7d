"""The ``web_delivery`` step: a model's levels of detail become a static, self-contained bundle for S3 or a CDN.

Input: the folder ``mobile_package`` writes (``levels/<level>.glb`` Draco and ``.usdz``, ``summary.json`` with
the level table). Output: the level files, ``index.html`` with the vendored ``<model-viewer>`` (and its Draco
decoder: the levels are Draco-compressed) that picks a level by the device (``_web_page``), ``ios-src`` set to
the level's usdz for AR Quick Look, a CPU-rendered ``poster.png``, and ``manifest.json`` listing every other file
with its size and sha256, and the level table. Every path is relative, nothing is fetched from the network.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import lazy_loader as lazy
from pydantic import BaseModel

from kai_flows.step import In, Out, step
from kai_steps._colmap import ReconstructionInputError
from kai_steps._io import sha256_file, staged_dir, write_json
from kai_steps._mobile_lod import LEVELS, level_table, load_model
from kai_steps._mobile_texture import TexturedMesh, from_trimesh, sample_texture
from kai_steps._render import BACKGROUND, fit_eye, look_at_rays, render
from kai_steps._web_page import VIEWER, page

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")

FOV_DEG = 36.0  # the report previews' field of view
VIEWER_FILES = (VIEWER, "LICENSE", "NOTICE", "README.md", "draco/draco_wasm_wrapper.js", "draco/draco_decoder.wasm")


class WebDeliverySummary(BaseModel):
    levels: list[str]  # coarsest first
    files: int  # in the manifest
    bytes: int  # the whole bundle
    poster: str


def _levels(package: Path) -> list[dict]:
    rows = level_table(package, "levels", "levels folder", "mobile_package")
    for r in rows:
        if r.get("name") not in LEVELS:
            raise ReconstructionInputError(f"levels folder {package}: unknown level {r.get('name')!r}; "
                                           f"known: {', '.join(LEVELS)}")
        for key in ("glb", "usdz"):
            if not (package / str(r.get(key))).is_file():
                raise ReconstructionInputError(f"levels folder {package}: level {r['name']} has no {key} "
                                               f"({r.get(key)!r} is missing)")
    return rows


def _textured_render(t: TexturedMesh, eye: np.ndarray, fwd: np.ndarray, up: np.ndarray, px: int) -> np.ndarray:
    """As ``_render.render``, the colour read from the texture at each hit (bilinear) rather than the vertices."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(t.vertices.astype(np.float32)), o3d.core.Tensor(t.faces.astype(np.uint32)))
    rays = look_at_rays(eye, eye + fwd, up, FOV_DEG, px, px)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    hit = np.isfinite(ans["t_hit"].numpy())
    prim = ans["primitive_ids"].numpy()[hit].astype(np.int64)
    b = ans["primitive_uvs"].numpy()[hit]
    w = np.stack([1 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], axis=1)
    uv = np.einsum("nk,nkc->nc", w, t.uv[t.faces[prim]])
    rgb = sample_texture(t.image, np.column_stack([uv[:, 0], 1.0 - uv[:, 1]])) / 255.0  # glTF V runs down
    shade = 0.25 + 0.75 * np.abs(np.sum(ans["primitive_normals"].numpy()[hit] * rays[..., 3:][hit], axis=-1))
    img = np.broadcast_to(BACKGROUND, (px, px, 3)).copy()
    img[hit] = np.clip(rgb * shade[:, None] * 255.0, 0, 255)
    return img.astype(np.uint8)


def _poster(glb: Path, path: Path, px: int) -> None:
    """The finest level seen from the front, 20 degrees above, framed whole, with its texture or vertex colours
    and a headlight, as the report's previews."""
    import trimesh
    from PIL import Image

    e = np.radians(20.0)
    fwd = -np.array([0.0, np.sin(e), np.cos(e)])
    up = np.array([0.0, 1.0, 0.0])
    textured = from_trimesh(trimesh.load(glb, force="mesh", process=False))
    if textured is not None:
        eye = fit_eye(textured.vertices, fwd, up, FOV_DEG, 1.0, 0.05)
        img = _textured_render(textured, eye, fwd, up, px)
    else:
        mesh = load_model(glb)  # COLOR_0 back to sRGB
        rgb = None if mesh.visual.kind != "vertex" else np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
        eye = fit_eye(np.asarray(mesh.vertices), fwd, up, FOV_DEG, 1.0, 0.05)
        img = render(np.asarray(mesh.vertices), np.asarray(mesh.faces), rgb, eye, eye + fwd, up=up,
                     fov_deg=FOV_DEG, width=px, height=px)
    Image.fromarray(img).save(path, optimize=True)



# Measured on 2 busy CPU cores: three levels (82k..24.5k faces) bundled in 1.9 s, most of it the poster's render.
@step(image="export", cpu="1", memory="2Gi", pool="cpu-optimized", timeout="20m")
def web_delivery(
    package: In[Path],
    bundle: Out[Path],
    title: str = "3D model",
    poster_px: int = 768,
) -> WebDeliverySummary:
    """Write the bundle: ``index.html``, ``manifest.json``, ``poster.png``, ``levels/``, ``viewer/``."""
    if not 64 <= poster_px <= 2048:
        raise ReconstructionInputError(f"poster_px={poster_px} is outside 64..2048")
    package = Path(package)
    rows = _levels(package)
    src = resources.files("kai_steps").joinpath("viewer")
    with staged_dir(Path(bundle)) as out:
        (out / "levels").mkdir()
        table = []
        for r in rows:
            glb, usdz = f"levels/{r['name']}.glb", f"levels/{r['name']}.usdz"
            shutil.copyfile(package / r["glb"], out / glb)
            shutil.copyfile(package / r["usdz"], out / usdz)
            table.append({**r, "glb": glb, "usdz": usdz})
        for name in VIEWER_FILES:
            (out / "viewer" / name).parent.mkdir(parents=True, exist_ok=True)
            (out / "viewer" / name).write_bytes(src.joinpath(name).read_bytes())
        _poster(out / table[-1]["glb"], out / "poster.png", poster_px)
        (out / "index.html").write_text(page(title, table, "poster.png", draco=True))
        files = sorted(p for p in out.rglob("*") if p.is_file())
        listed = [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                  for p in files]
        write_json(out / "manifest.json", {"title": title, "entry": "index.html", "poster": "poster.png",
                                           "levels": table, "files": listed})
        total = sum(f["bytes"] for f in listed) + (out / "manifest.json").stat().st_size
    return WebDeliverySummary(levels=[r["name"] for r in table], files=len(listed), bytes=total,
                              poster="poster.png")
