"""A glb written directly: placed (see ``_export.place``), linear ``COLOR_0``, a matte PBR material, optionally Draco.

Plain: float32 positions and unit normals, ``COLOR_0`` as float32 linear RGB (exact; 8-bit linear would band the
darks), uint32 indices. Draco (KHR_draco_mesh_compression): the blob is encoded first and the accessors are
described from its decoded counts, so Draco may reorder vertices (its edgebreaker coder; trimesh's
``extension_draco`` keeps vertex order, which forces the sequential coder: an 81,920-face coloured sphere came to
718 KB that way against 57 KB here), which is how gltf-transform and gltfpack write it. Its ``COLOR_0`` is 8-bit
linear RGB (gltf-transform's default too) without the alpha channel, which photogrammetry colours never use.

The material: baseColorFactor 1 (the vertex colours are the colour), metallic 0, roughness ``ROUGHNESS``, single
sided (the meshes face their cameras). glTF's default material, used when none is given, is fully metallic and
renders vertex colours nearly black.

A textured mesh (an ``_export.EncodedTexture``, or the mesh's own: ``_export.texture_of``) has ``TEXCOORD_0``
(float32; in Draco quantised to ``uv_bits``) instead of ``COLOR_0``, and its material's ``baseColorTexture`` is the
encoded image (PNG or JPEG, as given) in a buffer view after the geometry (glTF reads base colour textures as sRGB),
sampled with trilinear mip-mapping and clamped at the atlas edge.
"""

from __future__ import annotations

import json
import struct

import lazy_loader as lazy

from kai_steps._export import (
    ROUGHNESS,
    EncodedTexture,
    Placement,
    srgb_to_linear,
    texture_of,
    unit_normals,
    vertex_rgba,
)

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
DracoPy = lazy.load("DracoPy")
np = lazy.load("numpy")
trimesh = lazy.load("trimesh")

DRACO_EXT = "KHR_draco_mesh_compression"
COMPRESSION_LEVEL = 7  # 0-10; 7 is Draco's default speed/size balance (10 saves ~5% for 2-3x the time)
UV_BITS = 14  # default: 1/16 texel of an 1024 atlas, 1/2 texel of 8192
NORMAL_BITS = 8  # octahedral normals: gltfpack's default; 10 bits (gltf-transform's) costs 7% more for no visible gain
_FLOAT, _UBYTE, _UINT = 5126, 5121, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963

MATERIAL = {
    "name": "vertex colour",
    "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                             "roughnessFactor": ROUGHNESS},
    "doubleSided": False,
}
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def _bounds(points: np.ndarray) -> dict:
    p = np.asarray(points, dtype=np.float32)
    return {"min": [float(x) for x in p.min(axis=0)], "max": [float(x) for x in p.max(axis=0)]}


def glb_bytes(mesh: trimesh.Trimesh, placement: Placement, *, draco: bool = False, quantization_bits: int = 14,
              generator: str = "kai-flows", texture: EncodedTexture | None = None, uv_bits: int = UV_BITS,
              extras: dict | None = None) -> bytes:
    """The mesh, placed in metres, as a one-primitive glb (positions, normals, and linear vertex colours or a
    texture: ``texture``, else the mesh's own). ``extras``: the asset's extras (default: the placement)."""
    positions = placement.metres(mesh.vertices).astype(np.float32)
    normals = unit_normals(mesh)
    textured = texture if texture is not None else texture_of(mesh)
    rgba = None if textured is not None else vertex_rgba(mesh)
    linear = None if rgba is None else srgb_to_linear(rgba[:, :3])
    # glTF's UV origin is the image's top-left corner, OBJ's (trimesh's) the bottom-left.
    uv = None if textured is None else (np.asarray(textured.uv) * [1.0, -1.0] + [0.0, 1.0]).astype(np.float32)
    faces = np.asarray(mesh.faces, dtype=np.uint32)
    if draco:
        blob, accessors, primitive = _draco(positions, normals, linear, uv, faces, quantization_bits, uv_bits)
        views = [{"buffer": 0, "byteOffset": 0, "byteLength": len(blob)}]
        extensions = {"extensionsUsed": [DRACO_EXT], "extensionsRequired": [DRACO_EXT]}
    else:
        arrays = [(faces.ravel(), _ELEMENT_ARRAY_BUFFER), (positions, _ARRAY_BUFFER), (normals, _ARRAY_BUFFER)]
        accessors = [
            {"bufferView": 0, "componentType": _UINT, "count": int(faces.size), "type": "SCALAR"},
            {"bufferView": 1, "componentType": _FLOAT, "count": len(positions), "type": "VEC3",
             **_bounds(positions)},
            {"bufferView": 2, "componentType": _FLOAT, "count": len(normals), "type": "VEC3"},
        ]
        primitive = {"attributes": {"POSITION": 1, "NORMAL": 2}, "indices": 0}
        for name, extra, kind in (("COLOR_0", linear, "VEC3"), ("TEXCOORD_0", uv, "VEC2")):
            if extra is not None:
                arrays.append((extra.astype(np.float32), _ARRAY_BUFFER))
                accessors.append({"bufferView": len(arrays) - 1, "componentType": _FLOAT, "count": len(extra),
                                  "type": kind})
                primitive["attributes"][name] = len(arrays) - 1
        blob, views = _pack([(np.ascontiguousarray(a).tobytes(), t) for a, t in arrays])
        extensions = {}
    material = dict(MATERIAL)
    images: dict = {}
    if textured is not None:
        views.append({"buffer": 0, "byteOffset": len(_pad(blob, b"\0")), "byteLength": len(textured.data)})
        blob = _pad(blob, b"\0") + textured.data
        material = {**MATERIAL, "name": "texture", "pbrMetallicRoughness": {
            **MATERIAL["pbrMetallicRoughness"], "baseColorTexture": {"index": 0, "texCoord": 0}}}
        images = {"images": [{"bufferView": len(views) - 1, "mimeType": textured.mime_type}],
                  "samplers": [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                                "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}],
                  "textures": [{"sampler": 0, "source": 0}]}
    gltf = {
        "asset": {"version": "2.0", "generator": generator,
                  "extras": extras if extras is not None else {"placement": placement.describe()}},
        **extensions,
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "model"}],
        "materials": [material],
        **images,
        "meshes": [{"name": "model", "primitives": [{**primitive, "mode": 4, "material": 0}]}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(_pad(blob, b"\0"))}],
    }
    js = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    bin_ = _pad(blob, b"\0")
    total = 12 + 8 + len(js) + 8 + len(bin_)
    return b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(js), b"JSON"), js,
                     struct.pack("<I4s", len(bin_), b"BIN\0"), bin_])


def _pack(chunks: list[tuple[bytes, int]]) -> tuple[bytes, list[dict]]:
    """Concatenate 4-byte-aligned chunks into one buffer; one buffer view per chunk with its target."""
    parts, views, offset = [], [], 0
    for data, target in chunks:
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": target})
        parts.append(_pad(data, b"\0"))
        offset += len(parts[-1])
    return b"".join(parts), views


def _draco(positions: np.ndarray, normals: np.ndarray, linear: np.ndarray | None, uv: np.ndarray | None,
           faces: np.ndarray, quantization_bits: int, uv_bits: int) -> tuple[bytes, list[dict], dict]:
    """The Draco blob, the accessors that describe its decoded data, and the primitive referencing them."""
    colors = None if linear is None else np.round(linear * 255.0).astype(np.uint8)
    blob = DracoPy.encode(
        positions.astype(np.float64), faces, quantization_bits=quantization_bits, compression_level=COMPRESSION_LEVEL,
        normals=normals.astype(np.float64), normal_quantization_bits=NORMAL_BITS, colors=colors,
        tex_coord=None if uv is None else uv.astype(np.float64), tex_coord_quantization_bits=uv_bits,
    )
    # Decode once: the counts and bounds the accessors must declare, and the attribute ids Draco assigned.
    back = DracoPy.decode(blob)
    ids = {a["attribute_type"]: a["unique_id"] for a in back.attributes}
    n = len(back.points)
    accessors = [
        {"componentType": _UINT, "count": int(back.faces.size), "type": "SCALAR"},
        {"componentType": _FLOAT, "count": n, "type": "VEC3", **_bounds(back.points)},
        {"componentType": _FLOAT, "count": n, "type": "VEC3"},
    ]
    attributes = {"POSITION": 1, "NORMAL": 2}
    draco_ids = {"POSITION": ids[DracoPy.AttributeType.POSITION], "NORMAL": ids[DracoPy.AttributeType.NORMAL]}
    if colors is not None:
        accessors.append({"componentType": _UBYTE, "normalized": True, "count": n, "type": "VEC3"})
        attributes["COLOR_0"] = 3
        draco_ids["COLOR_0"] = ids[DracoPy.AttributeType.COLOR]
    if uv is not None:
        accessors.append({"componentType": _FLOAT, "count": n, "type": "VEC2"})
        attributes["TEXCOORD_0"] = len(accessors) - 1
        draco_ids["TEXCOORD_0"] = ids[DracoPy.AttributeType.TEX_COORD]
    primitive = {"attributes": attributes, "indices": 0,
                 "extensions": {DRACO_EXT: {"bufferView": 0, "attributes": draco_ids}}}
    return blob, accessors, primitive


def glb_json(data: bytes) -> dict:
    """The JSON chunk of a glb (raises ValueError when the bytes are not a glb)."""
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    length, kind = struct.unpack_from("<I4s", data, 12)
    if magic != b"glTF" or version != 2 or kind != b"JSON":
        raise ValueError("not a glTF 2.0 binary")
    return json.loads(data[20:20 + length])
