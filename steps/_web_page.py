"""The web-delivery bundle's page: ``<model-viewer>`` from the vendored copy, and a script that picks a level.

The page loads nothing from the network and links only relative paths, so the bundle works from a bucket, a CDN
prefix or a local web server (from ``file://`` browsers refuse to let the viewer read the glb: the poster shows).
The level is picked in the browser, before the viewer loads anything: ``?level=<name>`` when it names a level in
the bundle, else the finest level the device is likely to handle: a data saver or 2G connection gets the coarsest,
little memory (``navigator.deviceMemory`` <= 2 GB) or 3G at most ``reduced``, a phone-class device (<= 4 GB,
<= 4 cores or a screen under 1400 device pixels on its long side) at most ``medium``, others the finest. AR
gets the finest level within the AR viewer's guidance: ``ios-src`` (AR Quick Look) at most 100k polygons and 2048 px
textures, and on Android (Scene Viewer is given ``src``) a glb of at most 10 MB.
"""

from __future__ import annotations

import html
import json

VIEWER = "model-viewer-umd.min.js"  # the classic-script build: it runs from disk, a bucket or a CDN alike
RANKS = {"preview": 0, "reduced": 1, "medium": 2, "full": 3}

_PICK = """(function () {
  var levels = %(levels)s;  // coarsest first
  var ranks = %(ranks)s;
  var viewer = document.getElementById('model');
  var asked = new URLSearchParams(location.search).get('level');
  var chosen = null, i;
  for (i = 0; i < levels.length; i++) if (levels[i].name === asked) chosen = levels[i];
  var forced = chosen !== null;
  if (!forced) {
    var n = navigator, c = n.connection || {}, mem = n.deviceMemory || 8, cores = n.hardwareConcurrency || 8;
    var px = Math.max(screen.width, screen.height) * (window.devicePixelRatio || 1);
    var want = 3;
    if (c.saveData || /2g$/.test(c.effectiveType || '')) want = 0;
    else if (mem <= 2 || c.effectiveType === '3g') want = 1;
    else if (mem <= 4 || cores <= 4 || px < 1400) want = 2;
    chosen = levels[0];
    for (i = 0; i < levels.length; i++) if (ranks[levels[i].name] <= want) chosen = levels[i];
  }
  // AR viewers have their own limits: Scene Viewer (Android) takes glb files up to 10 MB, AR Quick Look
  // (ios-src) 100k polygons and 2048 px textures: the finest level within them, at most the one chosen
  var ar = levels[0], android = levels[0];
  for (i = 0; i < levels.length && levels[i] !== chosen; i++) {}
  for (var j = 0; j <= i && j < levels.length; j++) {
    if (levels[j].ar_quick_look_ok) ar = levels[j];
    if (levels[j].scene_viewer_ok) android = levels[j];
  }
  if (!forced && /Android/i.test(navigator.userAgent)) chosen = android;
  viewer.setAttribute('ios-src', ar.usdz);
  viewer.setAttribute('src', chosen.glb);
  document.documentElement.setAttribute('data-level', chosen.name);
  var note = document.getElementById('level');
  note.textContent = 'Showing the ' + chosen.name + ' level (' + chosen.triangles.toLocaleString() +
    ' triangles, ' + (chosen.glb_bytes / 1048576).toFixed(2) + ' MB)' +
    (asked && asked !== chosen.name ? '; there is no level "' + asked + '" here' : '') + '.';
  if (asked && asked !== chosen.name) note.className = 'warn';
})();"""

_STYLE = ("body{font-family:sans-serif;margin:0;background:#fafafa;color:#222}"
          "model-viewer{width:100vw;height:80vh;background:#f5f5f5}main{max-width:900px;margin:0 auto;padding:1em}"
          "a{margin-right:1em}.warn{color:#a40}")


def page(title: str, levels: list[dict], poster: str, draco: bool) -> str:
    """index.html: ``levels`` rows (``mobile_package``'s level table, coarsest first), paths relative to it."""
    keys = ("name", "glb", "usdz", "triangles", "glb_bytes", "ar_quick_look_ok", "scene_viewer_ok")
    rows = [{k: r[k] for k in keys} for r in levels]
    # "</" cannot close the script early: level names and paths are ours, but escape it regardless
    data = json.dumps(rows).replace("</", "<\\/")
    links = " ".join(f'<a href="?level={html.escape(r["name"])}">{html.escape(r["name"])}</a>' for r in rows)
    decoder = ("<script>customElements.get('model-viewer').dracoDecoderLocation = 'viewer/draco/';</script>"
               if draco else "")
    t = html.escape(title)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{t}</title>'
        f'<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>\n'
        f'<model-viewer id="model" poster="{html.escape(poster)}" alt="{t}" camera-controls touch-action="pan-y" '
        f'ar ar-modes="webxr scene-viewer quick-look" shadow-intensity="1"></model-viewer>\n'
        f'<main><h1>{t}</h1><p id="level"></p><p>Levels: {links}</p>'
        f'<p>Files, sizes and checksums: <a href="manifest.json">manifest.json</a>.</p></main>\n'
        f'<script>{_PICK % {"levels": data, "ranks": json.dumps(RANKS)}}</script>\n'
        f'<script src="viewer/{VIEWER}"></script>{decoder}\n</body></html>\n'
    )
