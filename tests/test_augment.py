import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax.augment import augment, normalize, reflect_pad


def _distinct_image(h=32, w=32):
    """One image whose pixels are all different, so any crop reveals its offset."""
    values = np.arange(h * w, dtype=np.int32).reshape(h, w)
    return np.stack([values, values + 7, values * 3], -1)


def test_reflect_pad_equals_numpy_reflect():
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    expected = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(np.asarray(reflect_pad(jnp.asarray(x))), expected)


def _offsets_and_flips(out, image):
    """Recover each augmented example's (dy, dx) and flip from the padded original."""
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    found = []
    for example in out:
        for flipped in (False, True):
            candidate = example[:, ::-1] if flipped else example
            # The top-left pixel is unique in the padded image except at reflections;
            # confirm the whole crop.
            for dy, dx in zip(*np.nonzero((padded[..., 0] == candidate[0, 0, 0]))):
                if dy <= 8 and dx <= 8 and np.array_equal(padded[dy : dy + 32, dx : dx + 32], candidate):
                    found.append((int(dy), int(dx), flipped))
                    break
            else:
                continue
            break
        else:
            raise AssertionError("an augmented image is not a crop (or flipped crop) of the padded input")
    return found


def test_every_crop_offset_is_reachable_and_flips_are_half():
    image = _distinct_image()
    batch = jnp.asarray(np.broadcast_to(image, (2000, 32, 32, 3)))
    out = np.asarray(jax.jit(augment)(jax.random.key(0), batch))
    found = _offsets_and_flips(out, image)
    offsets = {(dy, dx) for dy, dx, _ in found}
    assert offsets == {(dy, dx) for dy in range(9) for dx in range(9)}
    flip_rate = np.mean([f for _, _, f in found])
    # 2000 fair coin flips: 5 standard deviations is +-0.056.
    assert abs(flip_rate - 0.5) < 0.056


def test_augment_differs_per_example_and_per_key():
    batch = jnp.asarray(np.broadcast_to(_distinct_image(), (8, 32, 32, 3)))
    a = np.asarray(augment(jax.random.key(0), batch))
    b = np.asarray(augment(jax.random.key(1), batch))
    assert len({x.tobytes() for x in a}) > 1
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, np.asarray(augment(jax.random.key(0), batch)))


def test_normalize_is_totensor_then_normalize():
    x = np.array([[[[0, 128, 255]]]], np.uint8)
    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    expected = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(np.asarray(normalize(jnp.asarray(x), mean, std)), expected, rtol=1e-6, atol=1e-6)
