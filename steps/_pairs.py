"""Which image pairs structure-from-motion matches: all of them for small sets, about a constant number per image
for large ones, so matching grows linearly with the number of photos.

- ``sequential_pairs``: each photo with its next ``overlap`` photos in name order plus the photos 2^k further on
  (COLMAP's quadratic overlap): a phone capture is taken in order, so neighbours in name order overlap.
- ``retrieval_pairs``: each photo with the ``k`` photos that look most alike, by a small bag of SIFT words built
  from the database's own descriptors (no vocabulary file needed). It closes loops the order misses: the end of an
  orbit meets its start, a second orbit passes over the first, close-ups revisit the object.
GPS priors go through COLMAP's spatial pairing instead (``pycolmap.match_spatial``; see camera_poses).
"""

from __future__ import annotations

from pathlib import Path

import lazy_loader as lazy

# Heavy libraries load on first use: declaring a pipeline imports this module, running the step uses them.
np = lazy.load("numpy")
pycolmap = lazy.load("pycolmap")

WORDS = 256  # visual words: enough to tell views of one object apart, cheap to assign
PER_IMAGE = 500  # descriptors per image that vote (the largest-scale ones: stable under blur and resizing)


def sequential_pairs(names: list[str], overlap: int) -> set[tuple[str, str]]:
    names = sorted(names)
    pairs = set()
    for i in range(len(names)):
        steps = list(range(1, overlap + 1)) + [2**k for k in range(overlap.bit_length(), 31)
                                               if 2**k > overlap and i + 2**k < len(names)]
        pairs |= {(names[i], names[i + s]) for s in steps if i + s < len(names)}
    return pairs


def _image_words(db: pycolmap.Database) -> tuple[list[str], list[np.ndarray]]:
    names, descs = [], []
    for img in sorted(db.read_all_images(), key=lambda im: im.name):
        d = np.asarray(db.read_descriptors(img.image_id).data, dtype=np.float32)
        kp = np.asarray(db.read_keypoints(img.image_id), dtype=np.float32)
        if len(d) and kp.ndim == 2 and kp.shape[1] >= 4:
            scale = np.sqrt(np.abs(kp[:, 2] * kp[:, 5] - kp[:, 3] * kp[:, 4])) if kp.shape[1] == 6 else kp[:, 2]
            d = d[np.argsort(-scale, kind="stable")[:PER_IMAGE]]
        names.append(img.name)
        descs.append(d[:PER_IMAGE] / np.maximum(np.linalg.norm(d[:PER_IMAGE], axis=1, keepdims=True), 1e-6))
    return names, descs


def _vocabulary(descs: list[np.ndarray], seed: int) -> np.ndarray:
    """k-means (a few Lloyd steps) on a sample of all descriptors."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([d for d in descs if len(d)])
    sample = pool[rng.choice(len(pool), min(len(pool), 50 * WORDS), replace=False)]
    centres = sample[rng.choice(len(sample), min(WORDS, len(sample)), replace=False)]
    for _ in range(8):
        assign = np.argmax(sample @ centres.T, axis=1)
        for w in range(len(centres)):
            members = sample[assign == w]
            if len(members):
                c = members.mean(axis=0)
                centres[w] = c / max(float(np.linalg.norm(c)), 1e-6)
    return centres


def retrieval_pairs(database: Path, k: int, seed: int = 0) -> set[tuple[str, str]]:
    """Each image with its ``k`` most similar images by tf-idf weighted visual-word histograms (cosine)."""
    db = pycolmap.Database.open(str(database))
    try:
        names, descs = _image_words(db)
    finally:
        db.close()
    if len(names) < 2 or not any(len(d) for d in descs):
        return set()
    centres = _vocabulary(descs, seed)
    hist = np.zeros((len(names), len(centres)), np.float32)
    for i, d in enumerate(descs):
        if len(d):
            hist[i] = np.bincount(np.argmax(d @ centres.T, axis=1), minlength=len(centres))
    idf = np.log(len(names) / np.maximum((hist > 0).sum(axis=0), 1))
    vec = hist * idf
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-6)
    sim = vec @ vec.T
    np.fill_diagonal(sim, -np.inf)
    pairs = set()
    for i in range(len(names)):
        # At most the other N - 1: the diagonal (-inf) sorts last, and must not become a pair with itself.
        for j in np.argsort(-sim[i], kind="stable")[:min(k, len(names) - 1)]:
            a, b = sorted((names[i], names[int(j)]))
            pairs.add((a, b))
    return pairs


def write_pair_list(pairs: set[tuple[str, str]], path: Path) -> Path:
    path.write_text("".join(f"{a} {b}\n" for a, b in sorted(pairs)))
    return path
