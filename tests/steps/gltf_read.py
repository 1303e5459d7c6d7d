"""Reading a glb's attributes back without trimesh (which files COLOR_0 away once a material is present): the
JSON chunk, plain accessors from the BIN chunk, and KHR_draco_mesh_compression primitives through DracoPy."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import DracoPy
import numpy as np

_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_NORMALISED_MAX = {np.uint8: 255.0, np.uint16: 65535.0}


def glb_chunks(path: Path) -> tuple[dict, bytes]:
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and total == len(data), f"{path} is not a glTF 2.0 binary"
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    gltf = json.loads(data[20:20 + length])
    rest = 20 + length
    binary = b""
    if rest < len(data):
        blen, bkind = struct.unpack_from("<I4s", data, rest)
        assert bkind == b"BIN\0"
        binary = data[rest + 8:rest + 8 + blen]
    return gltf, binary


def _accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_DTYPES[acc["componentType"]])
    width = _WIDTH[acc["type"]]
    stride = view.get("byteStride", dtype.itemsize * width)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    rows = [np.frombuffer(binary, dtype, width, start + i * stride) for i in range(acc["count"])] \
        if stride != dtype.itemsize * width else \
        [np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(-1, width)]
    out = np.vstack(rows) if width > 1 else np.concatenate(rows)
    if acc.get("normalized"):
        out = out.astype(np.float64) / _NORMALISED_MAX[dtype.type]
    return out


def primitive_arrays(path: Path, mesh: int = 0, primitive: int = 0) -> dict[str, np.ndarray]:
    """{"POSITION": (n,3), "NORMAL": ..., "COLOR_0": floats in 0..1, "indices": (m,3)} of one primitive."""
    gltf, binary = glb_chunks(path)
    prim = gltf["meshes"][mesh]["primitives"][primitive]
    draco = prim.get("extensions", {}).get("KHR_draco_mesh_compression")
    if draco is None:
        out = {name: _accessor(gltf, binary, i) for name, i in prim["attributes"].items()}
        out["indices"] = _accessor(gltf, binary, prim["indices"]).reshape(-1, 3)
        return out
    view = gltf["bufferViews"][draco["bufferView"]]
    decoded = DracoPy.decode(binary[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]])
    by_id = {a["unique_id"]: a for a in decoded.attributes}
    out = {"indices": np.asarray(decoded.faces).reshape(-1, 3)}
    for name, uid in draco["attributes"].items():
        acc = gltf["accessors"][prim["attributes"][name]]
        values = np.asarray(by_id[uid]["data"]).reshape(acc["count"], _WIDTH[acc["type"]])
        if acc.get("normalized"):
            values = values.astype(np.float64) / _NORMALISED_MAX[np.dtype(_DTYPES[acc["componentType"]]).type]
        out[name] = values
    return out
