"""Hallo's face-locator and region masks from face-mesh landmarks (emo_jax.sample.hallo_masks)."""

import numpy as np
import pytest

from emo_jax.sample.hallo_masks import LIPS, SILHOUETTE, expand_box, hallo_masks


def _landmarks(face=(100, 300, 120, 360), lips=(170, 230, 300, 330)) -> np.ndarray:
    """478 points: the silhouette on the face box's corners and edges, the lips on theirs, the rest inside."""
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(face[0] + 20, face[1] - 20, 478), rng.uniform(face[2] + 20, face[3] - 20, 478)], 1)
    for ids, (x0, x1, y0, y1) in ((SILHOUETTE, face), (LIPS, lips)):
        corners = np.array([[x0, y0], [x1, y1]] + [[rng.uniform(x0, x1), rng.uniform(y0, y1)]] * (len(ids) - 2))
        points[list(ids)] = corners
    return points


def test_boxes_grow_about_their_centre_and_stay_inside_the_image():
    assert expand_box(np.array([100, 300, 120, 360]), 512, 512, 1.2) == (80, 320, 96, 384)
    assert expand_box(np.array([0, 100, 0, 100]), 512, 512, 2.0) == (0, 200, 0, 200)  # shifted right and down
    assert expand_box(np.array([450, 510, 10, 30]), 512, 512, 2.0) == (392, 512, 0, 40)


def test_the_face_locator_mask_is_the_grown_face_box():
    masks = hallo_masks(_landmarks(), 512, 512, face_expand_ratio=1.2)
    expected = np.zeros((512, 512), np.uint8)
    expected[96:384, 80:320] = 255
    np.testing.assert_array_equal(masks.face_locator, expected)


def test_region_masks_split_the_image_into_background_face_and_lips():
    masks = hallo_masks(_landmarks(), 512, 512)
    face, lip, full = (m.astype(int) for m in (masks.face, masks.lip, masks.full))
    assert lip.max() == 255 and full.max() == 255 and masks.face.dtype == np.uint8
    lips, forehead, corner = (39, 25), (20, 25), (2, 60)  # (row, col) at 64 x 64: the image / 8
    assert lip[lips] == 255 and face[lips] == 0  # the lips are taken out of the face region
    assert face[forehead] > 200 and lip[forehead] == 0 and full[forehead] < 50
    assert full[corner] > 250 and face[corner] == 0 and lip[corner] == 0
    assert np.all(face <= np.clip(255 - full, 0, 255) + 1)  # face = face blur - lips, full = 255 - face blur


def test_levels_are_the_unet_token_grids():
    levels = hallo_masks(_landmarks(), 512, 512).levels(512)
    assert [lv.shape for lv in levels] == [(3, 64 * 64), (3, 32 * 32), (3, 16 * 16), (3, 8 * 8)]
    assert all(lv.dtype == np.float32 and 0 <= lv.min() and lv.max() <= 1 for lv in levels)
    masks = hallo_masks(_landmarks(), 512, 512)
    unchanged = np.stack([masks.full, masks.face, masks.lip]).reshape(3, -1)  # 64 x 64 is the blur size
    np.testing.assert_allclose(levels[0] * 255, unchanged, atol=1e-4)


def test_a_wrong_landmark_count_is_refused():
    with pytest.raises(ValueError, match="478 face-mesh landmarks"):
        hallo_masks(np.zeros((68, 2)), 512, 512)
