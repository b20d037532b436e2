"""WADO-RS frames and rendered images, what web viewers fetch to draw: frames cut from the
released Pixel Data byte for byte, compressed ones decoded (or sent as stored when asked),
one frame drawn as PNG or JPEG; numbers out of range and media types the hub cannot send are
refused with the status PS3.18 gives them."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from tests.unit.hub.dicomweb.conftest import Workspace, get, multipart_parts, released_ct

INSTANCE = "/studies/2.25.1/series/2.25.1.1/instances/2.25.1.1.1"
NATIVE = 'multipart/related; type="application/octet-stream"'


def multiframe(frames: int = 3, *, compressed: bool = False) -> Dataset:
    """A released CT of ``frames`` 16-bit frames, each a different ramp."""
    ds = released_ct("BV-0001", 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    pixels = np.stack(
        [np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) + 100 * k
         for k in range(frames)]
    )  # fmt: skip
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.WindowCenter, ds.WindowWidth = 300, 600
    if compressed:
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    return ds


def test_frames_are_the_slices_of_the_released_pixel_data(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe()
    workspace.add(ds)
    size = int(ds.Rows) * int(ds.Columns) * 2

    response = get(client, f"{INSTANCE}/frames/3,1", researcher, accept=NATIVE)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NATIVE + "; boundary=")
    third, first = multipart_parts(response)
    assert third.body == ds.PixelData[2 * size : 3 * size]
    assert first.body == ds.PixelData[:size]
    assert (
        first.content_type == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )


def test_compressed_frames_are_decoded_or_sent_as_stored(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe(compressed=True)
    workspace.add(ds)
    expected = multiframe()

    decoded = multipart_parts(get(client, f"{INSTANCE}/frames/2", researcher))
    as_stored = multipart_parts(
        get(client, f"{INSTANCE}/frames/2", researcher, accept=f"{NATIVE}; transfer-syntax=*")
    )

    size = int(ds.Rows) * int(ds.Columns) * 2
    assert decoded[0].body == expected.PixelData[size : 2 * size]
    assert as_stored[0].content_type == f"application/octet-stream; transfer-syntax={RLELossless}"
    fragments = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=3))
    assert as_stored[0].body == fragments[1]


def test_a_frame_out_of_range_or_a_bad_list_is_a_400_naming_it(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())

    beyond = get(client, f"{INSTANCE}/frames/1,4", researcher)
    garbled = get(client, f"{INSTANCE}/frames/0,x", researcher)

    assert beyond.status_code == 400 and "frame 4" in beyond.json()["detail"]
    assert garbled.status_code == 400 and "'frames'" in garbled.json()["detail"]


def test_frames_in_a_media_type_the_hub_cannot_send_are_a_406(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())

    jpeg = get(
        client, f"{INSTANCE}/frames/1", researcher, accept="multipart/related; type=image/jpeg"
    )
    assert jpeg.status_code == 406


def test_a_rendered_frame_is_a_png_of_its_size_windowed(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = multiframe()
    workspace.add(ds)

    first = get(client, f"{INSTANCE}/rendered", researcher)
    third = get(client, f"{INSTANCE}/frames/3/rendered", researcher, accept="image/png")
    narrow = get(client, f"{INSTANCE}/frames/3/rendered?window=250,10", researcher)
    jpeg = get(client, f"{INSTANCE}/frames/1/rendered", researcher, accept="image/jpeg")

    assert first.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(third.content))
    assert picture.size == (int(ds.Columns), int(ds.Rows))
    assert third.content != first.content  # another frame, other pixels
    assert narrow.content != third.content  # another window
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    assert get(client, f"{INSTANCE}/rendered?window=1", researcher).status_code == 400
    assert get(client, f"{INSTANCE}/rendered", researcher, accept="image/gif").status_code == 406


def test_frames_need_a_member_of_the_project(
    client: TestClient, researcher: str, curator: str, workspace: Workspace
) -> None:
    workspace.add(multiframe())
    assert get(client, f"{INSTANCE}/frames/1", "not-a-token").status_code == 401
    assert get(client, f"{INSTANCE}/frames/1", curator).status_code == 200
    assert (
        get(
            client, "/studies/2.25.1/series/2.25.1.1/instances/2.25.9/frames/1", researcher
        ).status_code
        == 404
    )
