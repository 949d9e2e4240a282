"""A lesion photo as the record keeps it: the pixels, nothing else.

A phone's photo carries EXIF: the GPS position (often the patient's home), the time, the phone's
owner and serial. Givre decodes the image and encodes it again from its pixels alone (Pillow: parsing
JPEG and PNG safely is not something to write ourselves), so none of it enters the record or an
export; the colour profile is kept so the skin's colours stay as taken, and the EXIF orientation is
applied first so the photo stays upright. JPEG stays JPEG; PNG, WebP and TIFF become PNG (lossless).

The file is opened without following a symlink and without blocking (a FIFO would hang the form),
and must be a regular file under the size limit; each refusal is one line.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from controller.errors import RecordError

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")  # the decoders Pillow may use: what cameras and phones export, HEIC aside
PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
JPEG_QUALITY = 95  # one re-encoding at 95 is not visible on a lesion photo
WHAT_TO_DO = "Export the photo from the camera or phone as a JPEG or PNG file and give that file"


class PhotoRefused(RecordError):
    """A lesion photo Givre will not take into the record; the message says why and what to give instead."""


@dataclass(frozen=True, slots=True)
class CleanPhoto:
    data: bytes  # the image re-encoded from its pixels: no EXIF, GPS, XMP or comments
    suffix: str  # ".jpg" or ".png", the format of ``data``


def load_photo(path: Path, max_bytes: int) -> CleanPhoto:
    """Read ``path`` safely and return the photo without its metadata; PhotoRefused otherwise."""
    return clean_photo(path, read_regular_file(path, max_bytes))


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, opened without following a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PhotoRefused(f"photo {path}: no such file", "Check the path") from None
    except OSError as exc:
        if os.path.islink(path):
            raise PhotoRefused(f"photo {path}: is a symbolic link; Givre takes only the photo file itself",
                               "Give the path of the file the link points to") from None
        raise PhotoRefused(f"photo {path}: cannot be read ({exc.strerror})", "Check the file's permissions") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise PhotoRefused(f"photo {path}: not a regular file (a folder, pipe or device)", WHAT_TO_DO)
    with os.fdopen(fd, "rb") as file:
        if info.st_size > max_bytes:
            raise PhotoRefused(f"photo {path}: {info.st_size / 1e6:.1f} MB, above the clinic's limit of {max_bytes / 1e6:g} MB",
                               "Give a smaller photo, or raise max_photo_mb in the clinic config")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since fstat
        raise PhotoRefused(f"photo {path}: above the clinic's limit of {max_bytes / 1e6:g} MB", "Give a smaller photo")
    return data


def clean_photo(path: Path, data: bytes) -> CleanPhoto:
    """Decode ``data`` and encode its pixels again, without any metadata (``path`` names it in errors)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a few KB that decode to gigabytes
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                image.load()
                source_format = image.format
                icc_profile = image.info.get("icc_profile")
                upright = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise PhotoRefused(f"photo {path}: not a JPEG, PNG, WebP or TIFF image", WHAT_TO_DO) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PhotoRefused(f"photo {path}: not a JPEG, PNG, WebP or TIFF image Givre can read ({_reason(exc)})", WHAT_TO_DO) from None
    out = io.BytesIO()
    if source_format == "JPEG":
        upright.save(out, "JPEG", quality=JPEG_QUALITY, icc_profile=icc_profile, exif=b"")
        return CleanPhoto(out.getvalue(), ".jpg")
    if upright.mode not in PNG_MODES:
        upright = upright.convert("RGBA" if "A" in upright.getbands() else "RGB")
    upright.save(out, "PNG", icc_profile=icc_profile, exif=b"")
    return CleanPhoto(out.getvalue(), ".png")


def _reason(exc: BaseException) -> str:
    """Pillow's own words, on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
