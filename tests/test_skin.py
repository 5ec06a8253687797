"""facelib.fitting.skin: naive-Bayes GMM skin model on a real KDEF picture (face centre = skin, border = background)."""
from __future__ import annotations

import numpy as np
import pytest

from facelib.fitting.skin import SkinModel, features


@pytest.fixture(scope="module")
def kdef_image(kdef_root):
    cv2 = pytest.importorskip("cv2")
    path = kdef_root / "AF01" / "AF01NES.JPG"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (762, 562, 3)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _regions(im):
    """Skin: forehead and both cheeks of the frontal KDEF face; background: top band and upper side bands."""
    skin = np.concatenate([im[240:300, 200:360].reshape(-1, 3), im[440:520, 160:220].reshape(-1, 3),
                           im[440:520, 340:400].reshape(-1, 3)])
    bg = np.concatenate([im[:60].reshape(-1, 3), im[60:400, :50].reshape(-1, 3), im[60:400, -50:].reshape(-1, 3)])
    return skin, bg


@pytest.mark.parametrize("space", ["rgb", "rg"])
def test_skin_model_separates_face_from_kdef_background(kdef_image, tmp_path, space):
    skin, bg = _regions(kdef_image)
    rng = np.random.default_rng(0)
    perm_s, perm_b = rng.permutation(len(skin)), rng.permutation(len(bg))
    train_s, test_s = skin[perm_s[:3000]], skin[perm_s[3000:]]
    train_b, test_b = bg[perm_b[:3000]], bg[perm_b[3000:]]
    model = SkinModel(space=space).fit(train_s, train_b, n_components=4, prior_skin=0.5)
    p_skin = model.probability(test_s)
    p_bg = model.probability(test_b)
    assert p_skin.shape == (len(test_s),)
    assert np.median(p_skin) > 0.95 and (p_skin > 0.5).mean() > 0.9
    assert np.median(p_bg) < 0.05 and (p_bg < 0.5).mean() > 0.95
    prob = model.probability(kdef_image)                         # whole image (H, W)
    assert prob.shape == kdef_image.shape[:2] and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert prob[380:420, 250:310].mean() > 0.8                   # nose / inner cheeks, not used for fitting
    att = model.attention(kdef_image)
    assert np.all(att[prob > 0.5] == 1.0) and np.allclose(att[prob <= 0.5], prob[prob <= 0.5])
    # float 0–1 input gives the same answer as uint8
    np.testing.assert_allclose(model.probability(kdef_image[::20, ::20] / 255.0),
                               model.probability(kdef_image[::20, ::20]), atol=1e-5)
    # save / load round trip (.npz, numpy only)
    path = model.save(tmp_path / f"skin_{space}")
    assert path.suffix == ".npz" and path.is_file()
    again = SkinModel.load(path)
    assert again.space == space and again.prior_skin == pytest.approx(0.5)
    assert again.fingerprint() == model.fingerprint()  # a cached skin model keeps its key
    np.testing.assert_allclose(again.probability(kdef_image[::10, ::10]), model.probability(kdef_image[::10, ::10]),
                               rtol=1e-6, atol=1e-7)


def test_prior_and_features():
    rng = np.random.default_rng(1)
    skin = rng.normal([200, 140, 120], 8, size=(600, 3)).clip(0, 255)
    bg = rng.normal([120, 130, 150], 8, size=(1800, 3)).clip(0, 255)
    m = SkinModel().fit(skin, bg, n_components=2)
    assert m.prior_skin == pytest.approx(0.25)                   # from the sample counts
    mid = np.array([[160.0, 135.0, 135.0]])
    m_half = SkinModel().fit(skin, bg, n_components=2, prior_skin=0.5)
    assert m.probability(mid)[0] < m_half.probability(mid)[0]    # a smaller prior lowers the posterior
    # the fit caches are keyed by which skin model weighs the pixels: other pixels or prior → another key
    other = SkinModel().fit(skin[::2], bg, n_components=2)
    assert len({m.fingerprint(), m_half.fingerprint(), other.fingerprint()}) == 3
    assert SkinModel().fit(skin, bg, n_components=2).fingerprint() == m.fingerprint()  # same data, same key
    rg = features(np.array([[[100, 50, 50]]], dtype=np.uint8), "rg")
    np.testing.assert_allclose(rg, [[0.5, 0.25]], atol=1e-6)
    with pytest.raises(ValueError):
        SkinModel(space="hsv")
    with pytest.raises(RuntimeError):
        SkinModel().probability(np.zeros((2, 2, 3), np.uint8))
