"""dlib's face chip: the aligned 150×150 crop its face-recognition network reads, and a differentiable equivalent.

:func:`extract_chips` reproduces ``dlib.get_face_chip(img, shape, 150, 0.25)``: the least-squares similarity of the
5- or 68-point landmarks onto dlib's chip template (:func:`chip_template`, the chip geometry) and, when the face is
more than ~2× the chip, dlib's pyramid_down<2> pre-filtering before bilinear sampling (the pyramid). The geometry
runs in float32 real arithmetic (no float64, no complex), so the crop runs on Apple GPUs too.
:func:`chip_from_image` is dlib's own crop, for reference (needs the dlib runtime).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..face3d.landmarks import face_recognition_models_dir

CHIP_SIZE = 150
CHIP_PADDING = 0.25

# dlib's get_face_chip_details templates (x, y in [0, 1] of an unpadded chip).
_TEMPLATE_5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                        [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                        [0.4901123135679, 0.6277975316475]])
_MEAN_FACE_X = [0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991,
                0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373,
                0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516,
                0.79751, 0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159,
                0.556721, 0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
                0.553364, 0.490127, 0.42689]
_MEAN_FACE_Y = [0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
                0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345,
                0.587326, 0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852,
                0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388,
                0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746,
                0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182]
# 68-point indices dlib uses (17..67 without eyebrows 17–26 and lower lip 55–59, 65–67)
_IDX_68 = np.array([i for i in range(17, 68) if not (55 <= i <= 59 or 65 <= i <= 67 or 17 <= i <= 26)])
_TEMPLATE_68 = np.stack([np.array(_MEAN_FACE_X)[_IDX_68 - 17], np.array(_MEAN_FACE_Y)[_IDX_68 - 17]], 1)


def chip_template(num_points: int, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """(chip-space template points, landmark indices they correspond to) as in dlib's get_face_chip_details."""
    if num_points == 5:
        tmpl, idx = _TEMPLATE_5, np.arange(5)
    elif num_points == 68:
        tmpl, idx = _TEMPLATE_68, _IDX_68
    else:
        raise ValueError(f"landmarks must be dlib's 5-point or 68-point layout, got {num_points} points")
    return (padding + tmpl) / (2 * padding + 1) * size, idx


def landmark_points(landmarks, device) -> torch.Tensor:
    """Landmarks as float32 on ``device``, converted on the CPU side first (Apple GPUs have no float64); a tensor
    that requires grad keeps it."""
    if isinstance(landmarks, torch.Tensor):
        return landmarks.float().to(device)
    return torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)).to(device)


def _chip_geometry(landmarks: torch.Tensor, size: int, padding: float):
    """dlib's chip_details for landmarks (B,P,2): the chip centre's image point ``centre`` (B,2), ``rotk`` (B,2) =
    k·(cos θ, sin θ) and the scale (B,), such that chip pixel (u, v) is sampled at image point
    centre + R(rotk)·(u − (size−1)/2, v − (size−1)/2), R(c, s) = [[c, −s], [s, c]] (a rotation by θ times k).

    dlib fits a least-squares similarity (Umeyama) chip → image, keeps its angle and scale s and the image c of
    the chip centre (size/2, size/2), and spans a rectangle of width size·s − 1 centred on c with the chip's
    corner pixels, so one chip pixel step is k = (size·s − 1)/(size − 1) image pixels.

    float32 and real arithmetic only (device paths: Apple GPUs have no float64 or complex); the closed form is the
    complex one a = Σ conj(s)·d / Σ|s|² written out on centred points, exact to float32 rounding."""
    B, P, _ = landmarks.shape
    tmpl, idx = chip_template(P, size, padding)
    dev = landmarks.device
    src = torch.from_numpy(np.asarray(tmpl, np.float32)).to(dev)      # chip points (P, 2)
    dst = landmarks[:, torch.from_numpy(idx).to(dev)].float()          # image points (B, P, 2)
    src_m, dst_m = src.mean(0), dst.mean(1)
    sx, sy = (src - src_m).unbind(-1)
    dx, dy = (dst - dst_m[:, None]).unbind(-1)
    # closed-form 2-D similarity (= Umeyama without reflection): a = scale·e^{iθ} = (a_re, a_im)
    den = (sx * sx + sy * sy).sum()
    a_re = (sx * dx + sy * dy).sum(1) / den
    a_im = (sx * dy - sy * dx).sum(1) / den
    scale = torch.sqrt(a_re * a_re + a_im * a_im)
    t_x = dst_m[:, 0] - (a_re * src_m[0] - a_im * src_m[1])
    t_y = dst_m[:, 1] - (a_re * src_m[1] + a_im * src_m[0])
    h = size / 2
    centre = torch.stack([(a_re - a_im) * h + t_x, (a_re + a_im) * h + t_y], -1)
    k = (size * scale - 1) / (size - 1) / scale
    rotk = torch.stack([a_re * k, a_im * k], -1)
    return centre, rotk, scale


def _pyramid_levels(scale: float, size: int) -> int:
    """How many pyramid_down<2> steps dlib's extract_image_chips takes before bilinear sampling: it halves the
    chip's source rectangle while the halved rectangle still has more pixels than the chip."""
    extent = size * scale - 1          # right − left of the source rectangle (drectangle width = extent + 1)
    n = 0
    while (extent / 2 + 1) ** 2 > size * size:
        extent /= 2
        n += 1
    return n


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    """dlib's pyramid_down<2>: separable [1 4 6 4 1]/16 filter, valid borders, every other row/column (output
    pixel j is centred on input pixel 2j + 2); float, without dlib's integer truncation."""
    C = x.shape[1]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(C, 1, 1, 5), stride=(1, 2), groups=C)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(C, 1, 5, 1), stride=(2, 1), groups=C)


def _dlib_level_point(x: torch.Tensor, y: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image point (x, y) → coordinates in our pyramid level ``levels`` as dlib samples it. dlib maps points
    down with point_down(p) = p/2 − (1.25, 0.75) while its filter centres level pixel j on 2j + 2, so each level
    shifts the sample by (−0.5, +0.5) of that level's input pixels; reproduced here."""
    for _ in range(levels):
        x, y = x / 2 - 1.25, y / 2 - 0.75
    return x, y


def extract_chips(images: torch.Tensor, landmarks: torch.Tensor, size: int = CHIP_SIZE,
                  padding: float = CHIP_PADDING, antialias: bool = True) -> torch.Tensor:
    """Differentiable face chips (B,3,size,size) from images (B,3,H,W) with dlib's ``get_face_chip`` geometry:
    the same similarity alignment and, when the face is more than ~2× the chip (``antialias``), the same
    pyramid_down<2> pre-filtering before bilinear sampling. Differentiable w.r.t. images and landmarks; differs
    from dlib's uint8 chip only by dlib's rounding/truncation (and pyramid grid phase). float32 throughout."""
    landmarks = landmark_points(landmarks, images.device)
    centre, rotk, scale = _chip_geometry(landmarks, size, padding)
    u = torch.arange(size, dtype=torch.float32, device=images.device) - (size - 1) / 2
    ux, uy = u[None, :].expand(size, size), u[:, None].expand(size, size)   # [row, col] offsets: x, y
    out = []
    for b in range(images.shape[0]):
        img = images[b:b + 1]
        c, s = rotk[b, 0], rotk[b, 1]
        px = centre[b, 0] + c * ux - s * uy
        py = centre[b, 1] + s * ux + c * uy
        levels = _pyramid_levels(float(scale[b].detach()), size) if antialias else 0
        for _ in range(levels):
            if min(img.shape[-2:]) <= 8:
                break
            img = _pyr_down(img)
        # dlib level-l pixel j holds the content at 2j+2 of level l−1; our pyramid is built the same way from
        # the full image (dlib's from a sub-image with an integer offset), so the level coordinates coincide.
        if levels:
            px, py = _dlib_level_point(px, py, levels)
        H, W = img.shape[-2:]
        grid = torch.stack([px / (W - 1) * 2 - 1, py / (H - 1) * 2 - 1], -1)[None].to(img.dtype)
        out.append(F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True))
    return torch.cat(out)


# dlib reference helpers (need the dlib runtime)


def detect_shape_5pt(image_rgb: np.ndarray, upsample: int = 1):
    """dlib frontal-face detection + 5-point landmarks of the largest face; None when no face is found."""
    import dlib  # optional dependency: dlib's reference crop only
    if not hasattr(detect_shape_5pt, "_tools"):
        detect_shape_5pt._tools = (dlib.get_frontal_face_detector(), dlib.shape_predictor(
            str(face_recognition_models_dir() / "shape_predictor_5_face_landmarks.dat")))
    detector, predictor = detect_shape_5pt._tools
    img = np.ascontiguousarray(image_rgb)
    dets = detector(img, upsample)
    if len(dets) == 0:
        return None
    box = max(dets, key=lambda d: d.area())
    return predictor(img, box)


def shape_to_array(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def chip_from_image(image_rgb: np.ndarray, shape_5pt, size: int = CHIP_SIZE,
                    padding: float = CHIP_PADDING) -> np.ndarray:
    """dlib's own aligned chip (size×size×3 uint8 RGB), the crop ``compute_face_descriptor`` uses."""
    import dlib  # optional dependency: dlib's reference crop only

    return dlib.get_face_chip(np.ascontiguousarray(image_rgb), shape_5pt, size=size, padding=padding)


def chips_to_tensor(chips: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB chip(s) → float (B,3,H,W) in 0..255."""
    arr = np.asarray(chips)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(arr.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
