"""AR-readiness of a usdz: usd-core's validators plus the ARKit rules of ``usdchecker --arkit``.

usd-core 25+ has no Python ``UsdUtils.ComplianceChecker`` any more: its checks became UsdValidation validators
(package layout, byte alignment, compression, file extensions, stage metadata, encapsulation, material binding API,
shader Sdr compliance, missing references), which run here as they are. The ARKit-only rules of the C++ checker
(pxr/usd/usdUtils/complianceChecker.cpp: ARKitLayerChecker, ARKitPrimTypeChecker, ARKitShaderChecker,
ARKitMaterialBindingChecker, ARKitRootLayerChecker, the consumer-level upAxis and texture rules) have no validator
yet; they are re-stated below with the same allowed sets and the same wording.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pxr is heavy: imported when a check runs
    from pxr import Usd, UsdShade

# The ARKit rules' allowed sets, as in complianceChecker.h.
ARKIT_PRIM_TYPES = frozenset({
    "", "Scope", "Xform", "Camera", "Shader", "Material", "Mesh", "Sphere", "Cube", "Cylinder", "Cone", "Capsule",
    "GeomSubset", "Points", "SkelRoot", "Skeleton", "SkelAnimation", "BlendShape", "SpatialAudio"})
ARKIT_SHADER_IDS = frozenset({"UsdPreviewSurface", "UsdUVTexture", "UsdTransform2d"})  # and UsdPrimvarReader_*
ARKIT_LAYER_FORMATS = frozenset({"usd", "usda", "usdc", "usdz"})
ARKIT_TEXTURE_FORMATS = frozenset({"png", "jpg", "jpeg"})
# Validators for other domains (physics, lights, media) have nothing to check in a mesh delivery; they are kept:
# running every registered validator costs a few milliseconds and stays right if the stage grows.


def usd_validator_errors(stage: Usd.Stage) -> list[str]:
    """Every error (not warning) the registered UsdValidation validators report, as 'message (validator)'."""
    from pxr import UsdValidation

    registry = UsdValidation.ValidationRegistry()
    context = UsdValidation.ValidationContext(registry.GetOrLoadAllValidators())
    return [f"{e.GetMessage()} ({e.GetValidator().GetMetadata().name})" for e in context.Validate(stage)
            if e.GetType() == UsdValidation.ValidationErrorType.Error]


def arkit_rule_failures(stage: Usd.Stage, path: Path) -> list[str]:
    """The ARKit rules of usdchecker that usd-core's validators do not cover, each as 'message (fails rule)'."""
    from pxr import Sdf, Usd, UsdGeom, UsdShade

    out: list[str] = []
    if UsdGeom.GetStageUpAxis(stage) != UsdGeom.Tokens.y:
        out.append(f"Stage specifies upAxis '{UsdGeom.GetStageUpAxis(stage)}'. upAxis should be 'Y' "
                   "(fails 'StageMetadataChecker')")
    on_disk = [layer for layer in stage.GetUsedLayers() if layer.realPath]
    for layer in on_disk:
        fmt = layer.GetFileFormat().formatId
        if fmt not in ARKIT_LAYER_FORMATS:
            out.append(f"Layer '{layer.identifier}' has unsupported formatId '{fmt}' (fails 'ARKitLayerChecker')")
    if len(on_disk) > 1:
        out.append(f"The stage uses {len(on_disk)} layers. It should contain a single usdc layer to be compatible "
                   "with ARKit's implementation of usdz. (fails 'ARKitRootLayerChecker')")
    root = stage.GetRootLayer().realPath
    if root.endswith(".usdz"):
        names = Sdf.ZipFile.Open(root).GetFileNames()
        if not names or not names[0].endswith(".usdc"):
            first = names[0] if names else "nothing"
            out.append(f"First file ({first}) in usdz package '{root}' does not have the .usdc extension. "
                       "(fails 'ARKitRootLayerChecker')")
    elif not root.endswith(".usdc"):
        out.append(f"Root layer of the stage '{root}' does not have the '.usdc' extension. "
                   "(fails 'ARKitRootLayerChecker')")
    for prim in Usd.PrimRange.Stage(stage, Usd.TraverseInstanceProxies()):
        kind = str(prim.GetTypeName())
        if kind not in ARKIT_PRIM_TYPES:
            out.append(f"Prim <{prim.GetPath()}> has unsupported type '{kind}'. (fails 'ARKitPrimTypeChecker')")
        if prim.IsA(UsdShade.Shader):
            out.extend(_shader_failures(UsdShade.Shader(prim)))
        for rel in prim.GetRelationships():
            if rel.GetName().startswith("material:binding") and len(rel.GetTargets()) == 1:
                binding = UsdShade.MaterialBindingAPI.DirectBinding(rel)
                if not binding.GetMaterial():
                    out.append(f"Direct material binding <{rel.GetPath()}> targets an invalid material "
                               f"<{binding.GetMaterialPath()}>. (fails 'ARKitMaterialBindingChecker')")
        connectable = UsdShade.ConnectableAPI(prim)
        if connectable and str(prim.GetTypeName()):
            for shader_input in connectable.GetInputs():
                value = shader_input.Get()
                if shader_input.GetTypeName() == Sdf.ValueTypeNames.Asset and value and value.path:
                    ext = Path(value.path).suffix.lower().lstrip(".")
                    if ext not in ARKIT_TEXTURE_FORMATS:
                        out.append(f"Texture <{shader_input.GetAttr().GetPath()}> with asset @{value.path}@ has "
                                   "non-portable file format (fails 'TextureChecker')")
    return out


def _shader_failures(shader: UsdShade.Shader) -> list[str]:
    from pxr import UsdShade

    path, out = shader.GetPath(), []
    source = shader.GetImplementationSource()
    if source != UsdShade.Tokens.id:
        out.append(f"Shader <{path}> has non-id implementation source '{source}'. (fails 'ARKitShaderChecker')")
    shader_id = shader.GetShaderId() or ""
    if not (shader_id in ARKIT_SHADER_IDS or shader_id.startswith("UsdPrimvarReader")):
        out.append(f"Shader <{path}> has unsupported info:id '{shader_id}'. (fails 'ARKitShaderChecker')")
    for shader_input in shader.GetInputs():
        connections = shader_input.GetAttr().GetConnections()
        if not connections:
            continue
        if len(connections) > 1:
            out.append(f"Shader input <{shader_input.GetAttr().GetPath()}> has {len(connections)} connection "
                       "sources, but only one is allowed. (fails 'ARKitShaderChecker')")
        found = shader_input.GetConnectedSource()
        if not found:
            out.append(f"Connection source <{connections[0]}> for shader input <{shader_input.GetAttr().GetPath()}> "
                       "is missing. (fails 'ARKitShaderChecker')")
            continue
        source_prim = found[0].GetPrim()
        if not (source_prim.IsA(UsdShade.Shader) or source_prim.IsA(UsdShade.Material)):
            out.append(f"Shader input <{shader_input.GetAttr().GetPath()}> has an invalid connection source prim of "
                       f"type '{source_prim.GetTypeName()}'. (fails 'ARKitShaderChecker')")
    return out


def usdz_compliance_failures(path: Path) -> list[str]:
    """What usdchecker --arkit would report as errors or failed checks for the usdz at ``path`` (empty: AR-ready)."""
    from pxr import Tf, Usd

    try:
        stage = Usd.Stage.Open(str(path))
    except Tf.ErrorException as exc:
        return [f"cannot open {Path(path).name} on a USD stage: {str(exc).strip().splitlines()[-1].strip()}"]
    return usd_validator_errors(stage) + arkit_rule_failures(stage, Path(path))
