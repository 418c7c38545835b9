"""Image decoding: modes converted, limits enforced, corrupt data refused with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mdps_ray.data.images import ImageDecodeError, decode_image, decode_mask, encode_png


def _png(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "CMYK"])
def test_modes_become_rgb_in_range(mode: str) -> None:
    arr = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    if mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16) * 257)
        assert im.mode.startswith("I;16")
    else:
        im = Image.fromarray(arr, mode="L").convert(mode)
    x = decode_image(_png(im, "TIFF" if mode == "CMYK" else "PNG"), 16)
    assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.1  # content survived the conversion


def test_truncated_and_non_image_data_are_refused_with_a_reason() -> None:
    good = _png(Image.new("RGB", (32, 32), (10, 20, 30)))
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(good[: len(good) // 2], 16)
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(b"definitely not an image", 16)


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    im = Image.new("L", (4000, 4000))
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image(_png(im), 16, max_pixels=1_000_000)


def test_mask_uses_nearest_and_threshold() -> None:
    m = np.zeros((32, 32), dtype=np.uint8)
    m[8:16, 8:16] = 255
    out = decode_mask(_png(Image.fromarray(m)), 16)
    assert out.dtype.is_floating_point is False and out.sum() == 16 and out[0, 4:8, 4:8].all()


def test_png_round_trip() -> None:
    x = decode_image(_png(Image.new("RGB", (16, 16), (255, 0, 128))), 16)
    assert np.allclose(decode_image(encode_png(x), 16), x, atol=1 / 127.5)


def test_exif_orientation_is_applied_wherever_images_are_decoded(tmp_path) -> None:
    """A photo taken with the camera held sideways is scored as it is viewed (EXIF orientation was ignored)."""
    import io

    from PIL import Image

    from mdps_ray.data.images import decode_image, decode_native, image_size

    upright = Image.new("RGB", (6, 4), (0, 0, 0))
    upright.paste((250, 250, 250), (0, 0, 6, 1))  # a bright top row
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote: 4 x 6, the row on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif.tobytes())
    data = buf.getvalue()
    assert image_size(data) == (4, 6)  # (H, W) as viewed
    native = decode_native(data)
    assert native.shape == (3, 4, 6) and float(native[:, 0].mean()) > 0.9 and float(native[:, 1:].mean()) < -0.9
    assert decode_image(data, 8)[:, 0].mean() > decode_image(data, 8)[:, -1].mean()


def test_gif_webp_and_colon_names_are_listed_and_read(tmp_path) -> None:
    from PIL import Image

    from mdps_ray.data.records import list_folder
    from mdps_ray.storage.uris import read_bytes

    root = tmp_path / "parts"
    root.mkdir()
    for name in ("a.gif", "b.webp", "c::d.png"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / name, format={"gif": "GIF", "webp": "WEBP"}.get(
            name.rsplit(".", 1)[1], "PNG"))
    records = list_folder(str(root))
    assert sorted(r.uri.rsplit("/", 1)[1] for r in records) == ["a.gif", "b.webp", "c::d.png"]
    assert read_bytes(str(root / "c::d.png")) == (root / "c::d.png").read_bytes()  # not read as a URL chain


def test_a_16_bit_image_decodes_as_its_8_bit_reduction() -> None:
    """The integer mapping v // 257 (no float64 copies: benchmarks/decode_memory.py measures the memory) is the
    v · 255 / 65535 the float code computed."""
    import io

    import numpy as np
    from PIL import Image

    from mdps_ray.data.images import decode_image

    side = 300
    ramp = (np.arange(side * side, dtype=np.uint32) * 7 % 65536).astype(np.uint16).reshape(side, side)
    wide, narrow = io.BytesIO(), io.BytesIO()
    Image.fromarray(ramp).save(wide, format="PNG")
    reduced = np.floor(ramp.astype(np.float64) / 65535.0 * 255.0).astype(np.uint8)
    Image.fromarray(reduced).convert("RGB").save(narrow, format="PNG")
    assert np.array_equal(decode_image(wide.getvalue(), 64).numpy(), decode_image(narrow.getvalue(), 64).numpy())
