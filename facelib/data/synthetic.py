"""The study's embedded synthetic default: a labelled KDEF-like and FEI-like set rendered from the morphable model.

When no real dataset is configured the whole study runs on this set (and tests use small ones). Every image is
rendered from known coefficients, so ``ground_truth.parquet`` holds the true α/β of every picture.

Layout written under ``out_dir``::

    KDEF/<S><G><id>/<S><G><id><EX><ANG>.JPG   e.g. KDEF/AF01/AF01ANS.JPG  (KDEF's official naming and layout)
    fei/frontal/<id>a.jpg, <id>b.jpg          FEI-like neutral / smiling, grayscale 162×193 tight crops
    fei/fei_gender.csv                        subject_id,gender
    ground_truth.parquet                      one row per image: labels + alpha (40), beta (10), angles, gamma, …
    SYNTHETIC.json                            the marker: generator version, every parameter, the seed, counts

``load_kdef(out/"KDEF")`` and ``load_fei(out/"fei"/"frontal")`` read them like the real datasets.

Model and units
    ``MorphableModel.from_3ddfa()`` (BFM in 3DDFA's 62-d space, 53215 vertices, α 40, β 10, raw BFM units).
    3DDFA's identity basis ``w_shp`` has **unit-norm, orthogonal columns**: the eigenvalue scale is carried by α,
    not by the basis. So α is drawn as α = σ_α ⊙ (z + g·δ·d), z ~ N(0, I), with σ_α = the per-component standard
    deviation of α in 3DDFA_V2's ``param_mean_std_62d_120x120.pkl`` (the spread of α over its 300W-LP training
    fits: 5.8e5 for the first component down to 1.3e4 for the 40th). Such faces lie in the range the regressor
    saw in training and look like ordinary faces. (The 300W-LP mean of α is not added: the BFM mean face is the
    centre.) The expression basis ``w_exp`` carries its scale (column norms ≈ 2e5), β is O(1).

Gender rule (documented, learnable)
    Identity i of n (0-based): ``F`` for i < n // 2, else ``M`` (KDEF ids F01…, M01… numbered within gender; FEI
    subject ids 1…n_fei in the same order). Gender shifts α along one fixed, seeded unit direction d in the
    *whitened* α space, restricted to the first ``GENDER_COMPONENTS`` (10) components (the large-scale shape
    modes a regressor recovers best): g = −1 for F, +1 for M, δ = ``gender_delta`` (default 1.5). Along d the two
    classes are N(∓δ, 1), so the Bayes accuracy on the true α is Φ(δ) ≈ 93 % — gender is learnable but not
    trivial. Albedo is drawn independently of gender (a classifier must use shape).

Expressions
    7 fixed prototypes β (AF AN DI HA NE SA SU), NE = 0, built (not seeded) by ridge regression of the 10-d
    expression basis on hand-written 3-D displacement targets of the 68 landmarks (``EXPRESSION_TARGETS``: e.g.
    HA = mouth corners up and out + lips parted; SU = brows up + jaw dropped; AN = inner brows down and in + lips
    pressed), scaled by ``expression_gain``. Every image adds jitter N(0, (``beta_jitter``·σ_β)²), σ_β the 3DDFA
    β spread. The FEI-like set uses NE (``a``, neutral) and HA (``b``, smiling).

Pose and camera
    KDEF angles as yaw about the vertical axis, with ``MorphableModel.rotation_from_angles`` (R = Rz·Ry·Rx):
    FL −90°, HL −45°, S 0°, HR +45°, FR +90°. With BFM's axes (x towards the subject's left, z towards the
    viewer) a negative yaw turns the subject's left cheek towards the camera and the nose towards image left,
    as in KDEF's FL pictures (checked against the real KDEF dev images). Pitch and roll jitter N(0, 3°) and
    N(0, 2°), yaw jitter N(0, 2°). The head turns about a point on the neck axis 0.75 face-widths behind the nose
    tip (as a person turning their head), placed at the image centre (x) and ``HEAD_CENTRE_Y`` (y).
    Scaled-orthographic camera; the face is 0.40 of the image width, scale jitter ±4 %. A coarse head proxy
    (hair/skull, neck and shoulder ellipsoids placed from each identity's landmarks; hair length random and
    independent of gender) is drawn behind the face: without it FaceBoxes found 31 % of the faces, with it 97 %.

Appearance
    Per-identity albedo: a base skin tone (light-to-medium range, KDEF's population is mostly light-skinned),
    a smooth random field (sum of random cosines of vertex position, ±6 %), cheek redness, fine per-vertex
    grain; painted regions from the mean-shape landmarks: lips (redder, darker), eyebrows (hair colour), eyes
    (sclera, dark iris and pupil, dark lid line), nostrils, and a hairline band across the top of the forehead.
    Lighting: Deep3D's 27-coefficient SH model (``render.sh_shading``) with a random key light (band 1 ≈ 0.25,
    mainly from the front-top) and mild band-2 terms, near-monochromatic; a random exposure. Background:
    KDEF's warm grey (RGB ≈ 148, 132, 104, measured on the dev images) with a vertical gradient, per-image tint
    and pixel noise; a 0.6-px Gaussian blur softens the silhouette; JPEG quality 92. The FEI-like set is
    grayscale, histogram-equalised, cropped so the eyes sit at 17 % and the mouth at ≈ 70 % of the height.

Determinism
    Every random draw comes from ``np.random.default_rng([seed, stream, …])`` keyed by what it is for (gender
    direction; identity; image), so the set is a function of (seed, parameters) and does not depend on the
    order in which images are rendered or how they are batched (a resumed run re-renders identical bytes). Gender
    depends on i and n, so sets with different ``n_identities`` are different sets.
    Rendering is deterministic on CPU; images are written atomically (temporary file + rename).

Resume
    ``SYNTHETIC.partial.json`` (the parameters) is written first and renamed to ``SYNTHETIC.json`` at the end.
    A second call with the same parameters skips images already on disk (and returns at once when the marker is
    complete); a folder holding a set made with other parameters is an error.

Modules: this one is the set (identities, images, labels, ground truth, markers, resume); one face's model
statistics, appearance and rendering (proxy renderer, KDEF/FEI framing) are in :mod:`facelib.data.synthetic_faces`,
which shares its seeds' streams (``STREAMS``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..face3d.morphable import MorphableModel
from ..face3d.tddfa import coefficient_sigma
from ..io import atomic_path, atomic_write_json, atomic_write_table
from .datasets import ANGLE_CODES, EXPRESSION_CODES
from .synthetic_faces import (FACE_WIDTH_FRACTION, FACE_WIDTH_UNITS, FEI_SIZE, HEAD_CENTRE_Y, STREAMS, YAW_DEG,
                              Regions, Renderer, expression_prototypes, gender_direction, gender_of, identity_albedo,
                              random_gamma, render_fei, render_kdef)

GENERATOR_VERSION = "synthetic_v1"
MARKER = "SYNTHETIC.json"
PARTIAL_MARKER = "SYNTHETIC.partial.json"
GROUND_TRUTH = "ground_truth.parquet"

# ------------------------------------------------------------------------------------------ the generator
def generate_synthetic(out_dir, n_identities: int = 20, sessions=("A",), seed: int = 0,
                       image_size: tuple[int, int] = (381, 281), assets_dir=None, progress: bool = True,
                       n_fei: int = 40, gender_delta: float = 1.5, expression_gain: float = 1.0,
                       beta_jitter: float = 0.08, batch_size: int = 35) -> dict:
    """Render the synthetic KDEF-like and FEI-like sets into ``out_dir`` (see the module docstring).

    ``image_size`` is (height, width) of the KDEF-like pictures (default half of KDEF's 762×562).
    Returns ``dict(kdef_root, fei_root, n_images, n_kdef, n_fei_images, ground_truth, marker, seconds)``.
    """
    t0 = time.time()
    n_identities, n_fei, seed = int(n_identities), int(n_fei), int(seed)
    sessions = tuple(str(s).upper() for s in sessions)
    if not 1 <= n_identities or (n_identities + 1) // 2 > 35:
        raise ValueError("n_identities must be 1…70 (KDEF ids are 01–35 per gender)")
    if any(s not in ("A", "B") for s in sessions) or not sessions:
        raise ValueError("sessions must be drawn from ('A', 'B')")
    height, width = int(image_size[0]), int(image_size[1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(generator=GENERATOR_VERSION, seed=seed, n_identities=n_identities, sessions=list(sessions),
                  image_size=[height, width], n_fei=n_fei, gender_delta=float(gender_delta),
                  expression_gain=float(expression_gain), beta_jitter=float(beta_jitter),
                  gender_rule="identity i of n: F if i < n//2 else M; alpha shifted by -/+ delta along a seeded "
                              "unit direction of the whitened first 10 alpha components",
                  yaw_deg=YAW_DEG, model="3ddfa (BFM, 53215 vertices, alpha 40, beta 10)")
    fei_root = out / "fei" / "frontal"
    marker, partial = out / MARKER, out / PARTIAL_MARKER
    for existing in (marker, partial):
        if existing.is_file():
            old = json.loads(existing.read_text())
            if old.get("params") != json.loads(json.dumps(params)):
                raise ValueError(f"{out} already holds a synthetic set made with other parameters ({existing}); "
                                 "use another folder or delete it")
    if marker.is_file() and (out / GROUND_TRUTH).is_file():
        info = json.loads(marker.read_text())
        return _result(out, info, time.time() - t0)
    atomic_write_json({"params": params, "complete": False}, partial)

    model = MorphableModel.from_3ddfa(assets_dir=assets_dir)
    sigma_a, sigma_b = coefficient_sigma(assets_dir)
    protos = expression_prototypes(model, sigma_b, gain=expression_gain)
    gdir = gender_direction(seed, model.n_id)
    regions = Regions(model)
    renderer = Renderer(model)

    # ---- plan every image (parameters only; cheap) -------------------------------------------------------
    jobs = []  # (kind, identity key, list of image dicts)
    idents = {}
    for kind, n, stream in (("kdef", n_identities, "kdef_identity"), ("fei", n_fei, "fei_identity")):
        for i in range(n):
            rng = np.random.default_rng([seed, STREAMS[stream], i])
            g = gender_of(i, n)
            z = rng.standard_normal(model.n_id)
            alpha = sigma_a * (z + (-1.0 if g == "F" else 1.0) * gender_delta * gdir)
            albedo, look = identity_albedo(regions, rng)
            idents[(kind, i)] = dict(alpha=alpha, albedo=albedo, gender=g, look=look)
    face_scale = FACE_WIDTH_FRACTION * width / FACE_WIDTH_UNITS
    n_per_g = {"F": 0, "M": 0}
    for i in range(n_identities):
        ident = idents[("kdef", i)]
        g = ident["gender"]
        n_per_g[g] += 1
        num = n_per_g[g]
        for session in sessions:
            subject = f"{session}{g}{num:02d}"
            imgs = []
            for e_i, expr in enumerate(EXPRESSION_CODES):
                for a_i, ang in enumerate(ANGLE_CODES):
                    rng = np.random.default_rng([seed, STREAMS["kdef_image"], i, "AB".index(session), e_i, a_i])
                    beta = protos[expr] + beta_jitter * sigma_b * rng.standard_normal(model.n_exp)
                    angles = np.radians([rng.normal(0, 3.0), YAW_DEG[ang] + rng.normal(0, 2.0), rng.normal(0, 2.0)])
                    scale = face_scale * rng.uniform(0.96, 1.04)
                    centre = (width / 2 + rng.normal(0, 0.01 * width), HEAD_CENTRE_Y * height + rng.normal(0, 0.01 * height))
                    gamma = random_gamma(rng)
                    image_id = f"{subject}{expr}{ang}"
                    imgs.append(dict(dataset="kdef", image_id=image_id, identity=i,
                                     relpath=f"KDEF/{subject}/{image_id}.JPG", subject=f"{g}{num:02d}", gender=g,
                                     session=session, expression=expr, angle=ang, alpha=ident["alpha"], beta=beta,
                                     angles=angles, gamma=gamma, scale=scale, centre=centre,
                                     noise_seed=int(rng.integers(2 ** 31)), bg_seed=int(rng.integers(2 ** 31))))
            jobs.append(("kdef", i, imgs))
    fh, fw = FEI_SIZE
    for i in range(n_fei):
        ident = idents[("fei", i)]
        imgs = []
        for k, (kind, expr) in enumerate((("a", "NE"), ("b", "HA"))):
            rng = np.random.default_rng([seed, STREAMS["fei_image"], i, k])
            beta = protos[expr] + beta_jitter * sigma_b * rng.standard_normal(model.n_exp)
            angles = np.radians([rng.normal(0, 1.5), rng.normal(0, 1.5), rng.normal(0, 1.0)])
            gamma = random_gamma(rng)
            sid = i + 1
            imgs.append(dict(dataset="fei", image_id=f"{sid}{kind}", identity=i, relpath=f"fei/frontal/{sid}{kind}.jpg",
                             subject=f"fei{sid:03d}", gender=ident["gender"], session=None,
                             expression="neutral" if kind == "a" else "smiling", angle="frontal",
                             alpha=ident["alpha"], beta=beta, angles=angles, gamma=gamma,
                             scale=None, centre=None, noise_seed=int(rng.integers(2 ** 31)),
                             bg_seed=int(rng.integers(2 ** 31))))
        jobs.append(("fei", i, imgs))

    # ---- render -----------------------------------------------------------------------------------------------
    n_total = sum(len(j[2]) for j in jobs)
    bar = tqdm(total=n_total, desc="synthetic faces", unit="img", disable=not progress)
    for kind, i, imgs in jobs:
        todo = [im for im in imgs if not (out / im["relpath"]).is_file()]
        bar.update(len(imgs) - len(todo))
        albedo = idents[(kind, i)]["albedo"]
        proxy = renderer.proxy(idents[(kind, i)]["alpha"], idents[(kind, i)]["look"]) if todo else None
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            if kind == "kdef":
                render_kdef(renderer, chunk, albedo, proxy, height, width, out)
            else:
                render_fei(renderer, model, chunk, albedo, proxy, out)
            bar.update(len(chunk))
    bar.close()

    # ---- labels, ground truth, marker ----------------------------------------------------------------------
    fei_root.mkdir(parents=True, exist_ok=True)
    labels = pd.DataFrame({"subject_id": list(range(1, n_fei + 1)),
                           "gender": [idents[("fei", i)]["gender"] for i in range(n_fei)]})
    _atomic_csv(labels, out / "fei" / "fei_gender.csv")
    rows = []
    for kind, i, imgs in jobs:
        for im in imgs:
            rows.append(dict(dataset=im["dataset"], image_id=im["image_id"], relpath=im["relpath"],
                             identity=im["identity"], subject=im["subject"], gender=im["gender"],
                             session=im["session"], expression=im["expression"], angle=im["angle"],
                             alpha=[float(x) for x in im["alpha"]], beta=[float(x) for x in im["beta"]],
                             angles=[float(x) for x in im["angles"]], gamma=[float(x) for x in im["gamma"]],
                             skin_rgb=idents[(kind, i)]["look"]["skin_rgb"]))
    gt = pd.DataFrame(rows)
    atomic_write_table(gt, out / GROUND_TRUTH)
    n_kdef = int((gt["dataset"] == "kdef").sum())
    info = {"synthetic": True, "params": params, "complete": True,
            "counts": {"kdef": n_kdef, "fei": int((gt["dataset"] == "fei").sum()), "total": int(len(gt))},
            "prototypes_beta": {k: [float(x) for x in v] for k, v in protos.items()},
            "gender_direction_whitened": [float(x) for x in gdir],
            "sigma_alpha": [float(x) for x in sigma_a], "sigma_beta": [float(x) for x in sigma_b],
            "model_provenance": model.provenance,
            "files": {"kdef_root": "KDEF", "fei_root": "fei/frontal", "fei_labels": "fei/fei_gender.csv",
                      "ground_truth": GROUND_TRUTH},
            "seconds": round(time.time() - t0, 1)}
    atomic_write_json(info, marker)
    partial.unlink(missing_ok=True)
    return _result(out, info, time.time() - t0)


def synthetic_marker(root) -> Path | None:
    """The generator's marker (``SYNTHETIC.json``) of a dataset folder made by :func:`generate_synthetic` — found in
    ``root`` or up to two folders above it (``out/KDEF``, ``out/fei/frontal``) — else None. A run pointed at a
    rendered set through FACELIB_KDEF / FACELIB_FEI is synthetic even when its profile says ``synthetic: false``."""
    if not root:
        return None
    p = Path(root)
    for folder in (p, *list(p.parents)[:2]):
        if (folder / MARKER).is_file():
            return folder / MARKER
    return None


def _result(out: Path, info: dict, seconds: float) -> dict:
    c = info["counts"]
    return dict(kdef_root=str(out / "KDEF"), fei_root=str(out / "fei" / "frontal"), n_images=c["total"],
                n_kdef=c["kdef"], n_fei_images=c["fei"], ground_truth=str(out / GROUND_TRUTH),
                marker=str(out / MARKER), seconds=round(seconds, 1))


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
