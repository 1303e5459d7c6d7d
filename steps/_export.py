"""What the delivered model files share: where the model stands, how its colours are encoded, its usdz.

Placement: viewers put a glb's or usdz's origin on the floor (AR Quick Look, Scene Viewer) or orbit around it
(model-viewer), so the delivered model is centred on X/Z with its lowest point at Y = 0 (the mesh is already +Y up,
see ``point_cloud``). Scale: glTF's unit is the metre and a usdz declares ``metersPerUnit``; a structure-from-motion
model has an arbitrary scale, so metres are declared only when the caller knows the scale (``meters_per_unit``).
Otherwise the model is shown ``DISPLAY_SIZE_M`` across its largest side (a tabletop-to-room size that AR viewers
show whole), and the files say that the unit is unknown (glTF ``asset.extras``, usdz ``customLayerData``).

Colour: glTF ``COLOR_0`` and USD ``displayColor`` hold linear values, the photos' vertex colours are sRGB: they are
linearised with the IEC 61966-2-1 curve when written there (PLY/OBJ vertex colours and textures stay sRGB).

Texture: a textured mesh carries its sRGB image already encoded (``EncodedTexture``: PNG from the ``texture`` step's
trimesh ``TextureVisuals``, JPEG for the mobile levels; glTF and AR Quick Look read both): glTF ``baseColorTexture``
(sRGB by definition), usdz ``UsdUVTexture`` with ``sourceColorSpace`` sRGB reading the ``st`` primvar.
"""

from __future__ import annotations

import io
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader as lazy

from kai_steps._usd_check import usdz_compliance_failures

if TYPE_CHECKING:  # pxr is heavy: imported when a usdz is written
    from pxr import Usd, UsdShade

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

TEXTURE_FILES = {"image/png": "texture.png", "image/jpeg": "texture.jpg"}  # names inside a usdz, beside the usdc
DISPLAY_SIZE_M = 1.0  # largest side of a model of unknown scale, in metres, as AR viewers will show it
ROUGHNESS = 0.9  # photogrammetry surfaces (stone, plaster, bark) are mostly matte; 1.0 looks chalky
UNKNOWN_SCALE_NOTE = ("The reconstruction's scale is unknown (structure from motion fixes shape, not size): the model "
                      f"is shown {DISPLAY_SIZE_M:g} m across its largest side. Pass meters_per_unit when the true "
                      "scale is known.")


class ExportCheckError(RuntimeError):
    """A written model file did not read back as the mesh that was exported, or fails a validator."""


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB to linear, exactly (the piecewise curve, not a 2.2 gamma). uint8 input is read as
    0..255, float input as 0..1; the result is float64 in 0..1."""
    c = np.asarray(rgb)
    c = c / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The inverse curve: linear 0..1 (float) to sRGB 0..1 (float64)."""
    c = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def vertex_rgba(mesh: trimesh.Trimesh) -> np.ndarray | None:
    """The mesh's per-vertex sRGB colours as uint8 RGBA, or None when it has none."""
    if mesh.visual.kind == "vertex":
        return np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)
    return None


def _texture_image(mesh: trimesh.Trimesh) -> object | None:
    visual = mesh.visual
    if visual.kind != "texture" or getattr(visual, "uv", None) is None:
        return None
    image = getattr(visual.material, "image", None)
    return image if image is not None else getattr(visual.material, "baseColorTexture", None)


def has_texture(mesh: trimesh.Trimesh) -> bool:
    """Whether the mesh has UVs and a texture image (without encoding it)."""
    return _texture_image(mesh) is not None


@dataclass(frozen=True, eq=False)  # arrays do not compare as a bool
class EncodedTexture:
    """A base colour texture as the files carry it: per-vertex UVs in OBJ's and USD's convention (v up), the sRGB
    image already encoded (the writers embed the bytes as they are) and its MIME type."""

    uv: np.ndarray
    data: bytes
    mime_type: str  # a key of TEXTURE_FILES

    def __post_init__(self) -> None:
        if self.mime_type not in TEXTURE_FILES:
            raise ValueError(f"texture MIME type {self.mime_type!r} is not one of {', '.join(TEXTURE_FILES)}")


def texture_of(mesh: trimesh.Trimesh) -> EncodedTexture | None:
    """A textured trimesh's UVs and its image as PNG (lossless: the texture step's bake), else None."""
    image = _texture_image(mesh)
    if image is None:
        return None
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return EncodedTexture(np.asarray(mesh.visual.uv, dtype=np.float64), buf.getvalue(), "image/png")


def unit_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """Per-vertex unit normals as float32 (the file's, else area-weighted); a vertex with no usable normal (no
    faces, or faces cancelling out) gets +Y, since glTF requires unit length."""
    n = np.asarray(mesh.vertex_normals, dtype=np.float64)
    length = np.linalg.norm(n, axis=1)
    bad = ~np.isfinite(length) | (length < 1e-12)
    n = np.where(bad[:, None], [0.0, 1.0, 0.0], n / np.where(bad, 1.0, length)[:, None])
    n = n.astype(np.float32)
    return n / np.linalg.norm(n, axis=1, keepdims=True)  # unit again after rounding to float32


@dataclass(frozen=True)
class Placement:
    """Where the model stands in the delivered files: ``metres(v) = (v + offset) * scale``."""

    scale: float  # metres per model unit: the known scale, or the display scale when unknown
    offset: tuple[float, float, float]  # model units: centres the bounding box on X/Z, puts its lowest point at Y=0
    known_scale: bool

    def model(self, vertices: np.ndarray) -> np.ndarray:
        """Centred and grounded, in model units (a usdz's points; its metersPerUnit carries the scale)."""
        return np.asarray(vertices, dtype=np.float64) + np.asarray(self.offset)

    def metres(self, vertices: np.ndarray) -> np.ndarray:
        """Centred, grounded and scaled to metres (a glb's positions)."""
        return self.model(vertices) * self.scale

    def describe(self) -> dict:
        return {"units": "metres" if self.known_scale else "unknown", "meters_per_unit": self.scale,
                "offset": list(self.offset), **({} if self.known_scale else {"note": UNKNOWN_SCALE_NOTE})}


def place(vertices: np.ndarray, meters_per_unit: float = 0.0) -> Placement:
    """The placement of a +Y-up model: centred on X/Z, standing on Y = 0, in metres when ``meters_per_unit`` > 0
    (the known scale), else scaled to ``DISPLAY_SIZE_M`` across its largest side."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre = (lo + hi) / 2
    offset = (-float(centre[0]), -float(lo[1]), -float(centre[2]))
    if meters_per_unit > 0:
        return Placement(float(meters_per_unit), offset, True)
    size = float((hi - lo).max())
    return Placement(DISPLAY_SIZE_M / size if size > 0 else 1.0, offset, False)


def write_usdz(mesh: trimesh.Trimesh, path: Path, placement: Placement, texture: EncodedTexture | None = None) -> None:
    """A one-layer usdc in a usdz: /Model (Xform, kind component) holding /Model/Mesh with linear displayColor,
    bound to a UsdPreviewSurface that reads it (/Model/Materials/VertexColor), or, for a textured mesh (``texture``,
    else the mesh's own, see ``texture_of``), with ``primvars:st`` and a UsdPreviewSurface reading the packaged
    image (/Model/Materials/Texture); Y up, metersPerUnit = the placement's scale; the unit's provenance in
    customLayerData."""
    from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt

    points = placement.model(mesh.vertices).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="kai-usd-") as tmp:
        usdc = Path(tmp) / f"{path.stem}.usdc"
        stage = Usd.Stage.CreateNew(str(usdc))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, placement.scale)
        about = placement.describe()
        stage.GetRootLayer().customLayerData = {
            "kai:units": about["units"], "kai:metersPerUnit": placement.scale,
            "kai:offset": Gf.Vec3d(*placement.offset), **({"kai:note": about["note"]} if "note" in about else {})}
        root = UsdGeom.Xform.Define(stage, "/Model")
        Usd.ModelAPI(root.GetPrim()).SetKind(Kind.Tokens.component)
        stage.SetDefaultPrim(root.GetPrim())
        geom = UsdGeom.Mesh.Define(stage, "/Model/Mesh")
        geom.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(points))
        geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, dtype=np.int32)))
        geom.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(np.asarray(mesh.faces, dtype=np.int32).ravel()))
        geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
        geom.CreateDoubleSidedAttr(False)  # counter-clockwise front faces (rightHanded), as in glTF
        geom.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(unit_normals(mesh)))
        geom.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
        lo, hi = points.min(axis=0), points.max(axis=0)
        geom.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, lo)), Gf.Vec3f(*map(float, hi))]))
        rgba = vertex_rgba(mesh)
        textured = texture if texture is not None else texture_of(mesh)
        if textured is not None:
            name = TEXTURE_FILES[textured.mime_type]
            (Path(tmp) / name).write_bytes(textured.data)
            UsdGeom.PrimvarsAPI(geom.GetPrim()).CreatePrimvar(
                "st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex).Set(
                Vt.Vec2fArray.FromNumpy(np.asarray(textured.uv, dtype=np.float32)))
            material = _material(stage, "/Model/Materials/Texture", texture_file=name)
        else:
            if rgba is not None:
                linear = srgb_to_linear(rgba[:, :3]).astype(np.float32)
                geom.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex).Set(Vt.Vec3fArray.FromNumpy(linear))
            material = _material(stage, "/Model/Materials/VertexColor", vertex_colors=rgba is not None)
        binding = UsdShade.MaterialBindingAPI.Apply(geom.GetPrim())
        binding.Bind(material)
        stage.GetRootLayer().Save()
        if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(usdc)), str(path)):
            raise ExportCheckError(f"usd-core could not package {path.name}")
    _clear_zip_times(path)


def _material(stage: Usd.Stage, path: str, vertex_colors: bool = False,
              texture_file: str | None = None) -> UsdShade.Material:
    """A matte UsdPreviewSurface whose diffuse colour is the packaged image ``texture_file`` (sRGB) read at the
    ``st`` primvar, or the mesh's displayColor (``vertex_colors``), else mid grey."""
    from pxr import Gf, Sdf, UsdGeom, UsdShade

    grey = (0.18, 0.18, 0.18)
    UsdGeom.Scope.Define(stage, path.rsplit("/", 1)[0])
    material = UsdShade.Material.Define(stage, path)
    surface = UsdShade.Shader.Define(stage, f"{path}/Surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
    surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(ROUGHNESS)
    diffuse = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    if texture_file is not None:
        reader = UsdShade.Shader.Define(stage, f"{path}/TexCoord")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        albedo = UsdShade.Shader.Define(stage, f"{path}/Albedo")
        albedo.CreateIdAttr("UsdUVTexture")
        albedo.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(f"./{texture_file}")
        albedo.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        albedo.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
        albedo.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
        albedo.CreateInput("fallback", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*grey, 1.0))
        albedo.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
            reader.CreateOutput("result", Sdf.ValueTypeNames.Float2))
        diffuse.ConnectToSource(albedo.CreateOutput("rgb", Sdf.ValueTypeNames.Float3))
    elif vertex_colors:
        reader = UsdShade.Shader.Define(stage, f"{path}/DisplayColor")
        reader.CreateIdAttr("UsdPrimvarReader_float3")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("displayColor")
        reader.CreateInput("fallback", Sdf.ValueTypeNames.Float3).Set(Gf.Vec3f(*grey))
        diffuse.ConnectToSource(reader.CreateOutput("result", Sdf.ValueTypeNames.Float3))
    else:
        diffuse.Set(Gf.Vec3f(*grey))
    material.CreateSurfaceOutput().ConnectToSource(surface.CreateOutput("surface", Sdf.ValueTypeNames.Token))
    return material


def check_usdz(path: Path) -> None:
    """Raise ExportCheckError naming the file and the first failed rule unless usd-core's validators and the
    ARKit rules (see ``_usd_check``) pass."""
    failures = usdz_compliance_failures(path)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ExportCheckError(f"{path.name} fails the usdz ARKit compliance check: {failures[0]}{more}")


_DOS_EPOCH = (0, 0x21)  # time 00:00:00, date 1980-01-01: the earliest a zip entry can carry


def _clear_zip_times(path: Path) -> None:
    """Set every entry's time in a zip (local and central headers) to 1980-01-01 00:00, in place.

    usd-core stamps the packaging time into the usdz, the only bytes that differ between two packages of the same
    stage. Patched rather than re-zipped: a usdz's entries are padded to 64-byte alignment, which zipfile drops."""
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        raise ExportCheckError(f"{path.name} is not a zip archive")
    count, _, pos = struct.unpack_from("<HII", data, eocd + 10)
    for _ in range(count):
        local = struct.unpack_from("<I", data, pos + 42)[0]
        if data[pos:pos + 4] != b"PK\x01\x02" or data[local:local + 4] != b"PK\x03\x04":
            raise ExportCheckError(f"{path.name}: unexpected zip layout")
        struct.pack_into("<HH", data, pos + 12, *_DOS_EPOCH)
        struct.pack_into("<HH", data, local + 10, *_DOS_EPOCH)
        pos += 46 + sum(struct.unpack_from("<HHH", data, pos + 28))
    path.write_bytes(data)
