"""Real image files for the photo tests, made with Pillow: a phone's JPEG (EXIF with GPS, rotated) and a plain PNG."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112
ROTATED_90 = 6  # EXIF orientation: the pixels are stored turned; a viewer turns them back
# Paris, as a phone writes it: latitude and longitude refs and degrees/minutes/seconds.
GPS = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)}


def jpeg_with_gps(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    """A JPEG as a phone writes it: EXIF with a GPS position, the camera's make and an orientation."""
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATED_90
    exif[0x010F] = "PhoneMaker"  # Make
    exif[GPS_IFD] = GPS
    out = io.BytesIO()
    Image.new("RGB", size, (190, 90, 80)).save(out, "JPEG", exif=exif)
    path.write_bytes(out.getvalue())
    return path


def png(path: Path, size: tuple[int, int] = (4, 4)) -> Path:
    Image.new("RGBA", size, (190, 90, 80, 255)).save(path, "PNG")
    return path
