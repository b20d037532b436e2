"""WADO-RS frames and rendered images, what web viewers fetch to draw: frames cut from the
released Pixel Data byte for byte (any bits allocated, samples and planar configuration),
compressed ones decoded or sent as their stored bitstream under its own media type, one
frame drawn as JPEG or PNG through the file's window or the viewer's; numbers out of range
and media types the hub cannot send are refused with the status PS3.18 gives them; only a
project's readers get pixels, and each request is audited with counts only."""

from __future__ import annotations

import io
import json

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from sqlalchemy import select

from common.web.render import VoiWindow
from hub.audit import AuditRecord
from hub.deps import Runtime
from hub.users.models import Role
from tests.unit.hub.conftest import PROJECT, add_user
from tests.unit.hub.dicomweb.conftest import Workspace, get, multipart_parts, released_ct

INSTANCE = "/studies/2.25.1/series/2.25.1.1/instances/2.25.1.1.1"
NATIVE = 'multipart/related; type="application/octet-stream"'
AS_STORED = f"{NATIVE}; transfer-syntax=*"


def ramps(frames: int, rows: int, columns: int) -> np.ndarray:
    """``frames`` 16-bit ramps, each 100 above the one before."""
    ramp = np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns)
    return np.stack([ramp + 100 * k for k in range(frames)])


def multiframe(frames: int = 3, *, syntax: str | None = None, side: int = 16) -> Dataset:
    """A released CT of ``frames`` 16-bit frames ``side`` pixels square, compressed in
    ``syntax`` if given (OpenJPEG's encoder wants 32 pixels a side at least)."""
    ds = released_ct("BV-0001", 1)
    ds.Rows = ds.Columns = side
    pixels = ramps(frames, side, side)
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.WindowCenter, ds.WindowWidth = 300, 600
    if syntax is not None:
        ds.compress(syntax, pixels, generate_instance_uid=False)
    return ds


def frame_size(ds: Dataset) -> int:
    return int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8


def stored_frames(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


# -- frames ---------------------------------------------------------------------------------


def test_frames_are_the_slices_of_the_released_pixel_data(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe()
    workspace.add(ds)
    size = frame_size(ds)

    response = get(client, f"{INSTANCE}/frames/3,1", researcher, accept=NATIVE)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NATIVE + "; boundary=")
    third, first = multipart_parts(response)
    assert third.body == ds.PixelData[2 * size : 3 * size]
    assert first.body == ds.PixelData[:size]
    assert (
        first.content_type == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )


def test_the_frame_of_a_single_frame_instance_is_its_whole_pixel_data(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = released_ct("BV-0001", 1)
    workspace.add(ds)

    (frame,) = multipart_parts(get(client, f"{INSTANCE}/frames/1", researcher))
    beyond = get(client, f"{INSTANCE}/frames/2", researcher)

    assert frame.body == ds.PixelData
    assert beyond.status_code == 400 and "frame 2" in beyond.json()["detail"]


def test_colour_frames_keep_their_planes_and_8_bit_samples(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = released_ct("BV-0001", 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    planes = np.random.default_rng(7).integers(0, 256, (2, 3, rows, columns), dtype=np.uint8)
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PlanarConfiguration = 2, 3, 1
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = planes.tobytes()  # planar: all red, then all green, then all blue
    workspace.add(ds)

    (second,) = multipart_parts(get(client, f"{INSTANCE}/frames/2", researcher))

    assert second.body == planes[1].tobytes()
    assert len(second.body) == 3 * rows * columns


def test_one_bit_frames_start_on_a_byte_of_their_own(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = released_ct("BV-0001", 1)
    masks = np.random.default_rng(3).integers(0, 2, (3, 3, 5), dtype=np.uint8)  # 15 bits each
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 5, 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = np.packbits(masks.ravel(), bitorder="little").tobytes()  # 6 bytes, no gaps
    workspace.add(ds)

    second, third = multipart_parts(get(client, f"{INSTANCE}/frames/2,3", researcher))

    assert second.body == np.packbits(masks[1].ravel(), bitorder="little").tobytes()
    assert third.body == np.packbits(masks[2].ravel(), bitorder="little").tobytes()


def test_rle_frames_are_decoded_or_sent_as_stored(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe(syntax=RLELossless)
    workspace.add(ds)
    expected, size = multiframe(), frame_size(ds)

    decoded = multipart_parts(get(client, f"{INSTANCE}/frames/2", researcher))
    as_stored = multipart_parts(get(client, f"{INSTANCE}/frames/2", researcher, accept=AS_STORED))
    own_type = get(
        client,
        f"{INSTANCE}/frames/3,2",
        researcher,
        accept='multipart/related; type="image/dicom-rle"',
    )

    assert decoded[0].body == expected.PixelData[size : 2 * size]
    assert decoded[0].content_type.endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    assert as_stored[0].content_type == f"application/octet-stream; transfer-syntax={RLELossless}"
    assert as_stored[0].body == stored_frames(ds)[1]
    assert own_type.headers["content-type"].startswith('multipart/related; type="image/dicom-rle"')
    third, second = multipart_parts(own_type)
    assert third.content_type == f"image/dicom-rle; transfer-syntax={RLELossless}"
    assert [third.body, second.body] == stored_frames(ds)[:0:-1]


def test_jpeg_2000_frames_go_as_image_jp2_when_asked_and_decode_to_the_released_pixels(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe(syntax=JPEG2000Lossless, side=32)
    workspace.add(ds)
    expected, size = multiframe(side=32), frame_size(ds)
    # A viewer asking for a JPEG 2000 bitstream first, and native pixels if it cannot have one.
    accept = f'multipart/related; type="image/jp2", {NATIVE}; q=0.5'

    jp2 = get(client, f"{INSTANCE}/frames/3", researcher, accept=accept)
    decoded = multipart_parts(get(client, f"{INSTANCE}/frames/3", researcher, accept=NATIVE))

    assert jp2.headers["content-type"].startswith('multipart/related; type="image/jp2"')
    (part,) = multipart_parts(jp2)
    assert part.content_type == f"image/jp2; transfer-syntax={JPEG2000Lossless}"
    assert part.body == stored_frames(ds)[2]
    assert part.body.startswith(b"\xff\x4f\xff\x51")  # a JPEG 2000 codestream: SOC, SIZ
    assert decoded[0].body == expected.PixelData[2 * size : 3 * size]


def test_a_bitstream_type_the_stored_syntax_is_not_is_a_406_naming_what_is(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe(syntax=JPEG2000Lossless, side=32))

    jpeg = get(
        client, f"{INSTANCE}/frames/1", researcher, accept='multipart/related; type="image/jpeg"'
    )
    lossy = get(
        client,
        f"{INSTANCE}/frames/1",
        researcher,
        accept='multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.91',
    )

    assert jpeg.status_code == 406
    assert 'type="image/jp2"' in jpeg.json()["detail"]
    assert lossy.status_code == 406


def test_a_frame_out_of_range_or_a_bad_list_is_a_400_naming_it(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())

    beyond = get(client, f"{INSTANCE}/frames/1,4", researcher)
    garbled = get(client, f"{INSTANCE}/frames/0,x", researcher)

    assert beyond.status_code == 400 and "frame 4" in beyond.json()["detail"]
    assert garbled.status_code == 400 and "'frames'" in garbled.json()["detail"]


def test_uncompressed_frames_in_a_compressed_media_type_are_a_406(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())

    jpeg = get(
        client, f"{INSTANCE}/frames/1", researcher, accept='multipart/related; type="image/jpeg"'
    )
    xml = get(client, f"{INSTANCE}/frames/1", researcher, accept="application/dicom+xml")

    assert jpeg.status_code == 406 and "application/octet-stream" in jpeg.json()["detail"]
    assert xml.status_code == 406


# -- rendered -------------------------------------------------------------------------------


def decoded_picture(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def test_rendered_is_a_jpeg_by_default_and_a_png_of_the_frame_size_when_asked(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe()
    workspace.add(ds)

    default = get(client, f"{INSTANCE}/rendered", researcher)
    first = get(client, f"{INSTANCE}/rendered", researcher, accept="image/png")
    third = get(client, f"{INSTANCE}/frames/3/rendered", researcher, accept="image/png")

    assert default.status_code == 200, default.text
    assert default.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(default.content)).format == "JPEG"
    assert third.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(third.content)).size == (int(ds.Columns), int(ds.Rows))
    assert third.content != first.content  # another frame, other pixels


def test_a_rendered_png_is_the_frame_through_the_window_asked(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe()
    workspace.add(ds)
    third = ramps(3, int(ds.Rows), int(ds.Columns))[2].astype(np.float64)

    drawn = {
        function: decoded_picture(
            get(
                client,
                f"{INSTANCE}/frames/3/rendered?window=250,101,{function.lower().replace('_', '-')}",
                researcher,
                accept="image/png",
            ).content
        )
        for function in ("LINEAR", "LINEAR_EXACT", "SIGMOID")
    }

    for function, picture in drawn.items():
        assert np.array_equal(picture, VoiWindow(250, 101, function).grey_levels(third)), function
    assert not np.array_equal(drawn["LINEAR"], drawn["SIGMOID"])


def test_the_window_functions_follow_the_standard() -> None:
    values = np.array([0.0, 199.5, 200.0, 249.5, 250.0, 300.5, 400.0])

    linear = VoiWindow(250, 101).grey_levels(values)
    exact = VoiWindow(250, 100, "LINEAR_EXACT").grey_levels(values)
    sigmoid = VoiWindow(250, 100, "SIGMOID").grey_levels(values)

    # PS3.3 C.11.2.1.2.1: ((x - (c - 0.5)) / (w - 1) + 0.5) clipped, then 0..255.
    assert linear.tolist() == [0, 0, 1, 128, 129, 255, 255]
    # (x - c) / w + 0.5 clipped; 255 / (1 + exp(-4 (x - c) / w)).
    assert exact.tolist() == [0, 0, 0, 126, 128, 255, 255]
    assert sigmoid.tolist() == [0, 30, 30, 126, 128, 225, 254]


def test_rendered_parameters_and_media_types_the_hub_cannot_honour_are_refused(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())

    def status(query: str, accept: str | None = None) -> int:
        return get(client, f"{INSTANCE}/rendered{query}", researcher, accept=accept).status_code

    assert status("?window=1") == 400
    assert status("?window=10,0.5") == 400  # linear needs a width of at least 1
    assert status("?window=10,0.5,linear-exact") == 200
    assert status("?window=10,20,gamma") == 400
    assert status("?quality=0") == 400 and status("?quality=40") == 200
    assert status("", accept="image/gif") == 406
    assert get(client, f"{INSTANCE}/frames/1,2/rendered", researcher).status_code == 400
    assert get(client, f"{INSTANCE}/frames/4/rendered", researcher).status_code == 400


def test_a_lower_quality_makes_a_smaller_jpeg(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = released_ct("BV-0001", 1)
    noise = np.random.default_rng(1).integers(0, 4096, (int(ds.Rows), int(ds.Columns)))
    ds.PixelData = noise.astype(np.uint16).tobytes()
    workspace.add(ds)

    low = get(client, f"{INSTANCE}/rendered?quality=10", researcher)
    high = get(client, f"{INSTANCE}/rendered?quality=95", researcher)

    assert len(low.content) < len(high.content)


def test_rendered_compressed_frames_are_decoded_first(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe(syntax=JPEG2000Lossless, side=32))

    compressed = get(
        client, f"{INSTANCE}/frames/2/rendered?window=300,600", researcher, accept="image/png"
    )

    assert compressed.status_code == 200, compressed.text
    ramp = ramps(2, 32, 32)[1].astype(np.float64)
    assert np.array_equal(
        decoded_picture(compressed.content), VoiWindow(300, 600).grey_levels(ramp)
    )


# -- who gets pixels, and the record of it ----------------------------------------------------


def test_frames_and_rendered_need_a_reader_of_the_project(
    client: TestClient, runtime: Runtime, researcher: str, curator: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())
    outsider = add_user(runtime, "eve", Role.RESEARCHER, "another-project")
    elsewhere = "/studies/2.25.1/series/2.25.1.1/instances/2.25.9"

    for path in (f"{INSTANCE}/frames/1", f"{INSTANCE}/rendered", f"{INSTANCE}/frames/2/rendered"):
        assert get(client, path, "not-a-token").status_code == 401, path
        assert get(client, path, outsider).status_code == 403, path
        assert get(client, path, curator).status_code == 200, path
    assert get(client, f"{elsewhere}/frames/1", researcher).status_code == 404
    assert get(client, f"{elsewhere}/rendered", researcher).status_code == 404


def test_frames_and_rendered_are_audited_with_counts_only(
    client: TestClient, runtime: Runtime, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())

    assert get(client, f"{INSTANCE}/frames/1,3", researcher).status_code == 200
    assert get(client, f"{INSTANCE}/frames/2/rendered", researcher).status_code == 200
    assert get(client, f"{INSTANCE}/frames/9", researcher).status_code == 400  # nothing sent

    with runtime.sessions() as session:
        records = session.execute(
            select(AuditRecord)
            .where(AuditRecord.action.in_(["dicomweb.frames", "dicomweb.rendered"]))
            .order_by(AuditRecord.id)
        ).scalars()
        found = [(r.action, r.actor, r.subject, json.loads(r.details)) for r in records]
    assert found == [
        ("dicomweb.frames", "user:ada", f"project {PROJECT}", {"level": "instance", "frames": 2}),
        ("dicomweb.rendered", "user:ada", f"project {PROJECT}", {"level": "instance", "frames": 1}),
    ]
    assert not any("2.25.1" in str(record) or "BV-0001" in str(record) for record in found)
