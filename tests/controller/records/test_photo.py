"""Lesion photos: stored without EXIF/GPS, and a symlink, a FIFO, a folder, an oversize file or a
non-image refused in one line each (at the command line, before anything is recorded)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from controller.cli.main import main
from controller.config import Config
from controller.records.photo import PhotoRefused, load_photo
from controller.records.store import RecordStore
from tests.support.images import GPS_IFD, jpeg_with_gps, png

LIMIT = 1_000_000


def test_a_phones_jpeg_is_stored_without_its_exif_and_upright(tmp_path: Path) -> None:
    source = jpeg_with_gps(tmp_path / "wart.jpg", size=(40, 30))
    assert Image.open(source).getexif().get_ifd(GPS_IFD)  # the test photo does carry a position
    with RecordStore(tmp_path / "r.sqlite") as store:
        _digest, name = store.store_photo(source, store.patient_key("P-0001"))
        data = store.read_photo(name)  # decrypted: the file itself holds the image encrypted under the patient's key
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and name.endswith(".jpg")
    assert not image.getexif() and not image.getexif().get_ifd(GPS_IFD) and "exif" not in image.info
    assert b"Exif" not in data and b"PhoneMaker" not in data
    assert image.size == (30, 40)  # turned as the EXIF orientation said, since that tag is gone


def test_a_png_stays_a_png_without_metadata(tmp_path: Path) -> None:
    photo = load_photo(png(tmp_path / "lesion.png"), LIMIT)
    assert photo.suffix == ".png" and Image.open(io.BytesIO(photo.data)).size == (4, 4)


def test_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(jpeg_with_gps(tmp_path / "real.jpg"))
    with pytest.raises(PhotoRefused, match=r"link.jpg: is a symbolic link; Givre takes only the photo file itself"):
        load_photo(link, LIMIT)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(PhotoRefused, match=r"pipe.jpg: not a regular file \(a folder, pipe or device\)"):
        load_photo(fifo, LIMIT)


def test_a_device_or_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PhotoRefused, match="not a regular file"):
        load_photo(Path("/dev/null"), LIMIT)
    with pytest.raises(PhotoRefused, match="not a regular file"):
        load_photo(tmp_path, LIMIT)


def test_an_oversize_photo_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (LIMIT + 1))
    with pytest.raises(PhotoRefused, match=r"big.jpg: 1.0 MB, above the clinic's limit of 1 MB"):
        load_photo(big, LIMIT)


@pytest.mark.parametrize("data", [b"\xff\xd8 not really a jpeg", b"GIF89a"])
def test_what_does_not_decode_is_refused(tmp_path: Path, data: bytes) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(data)
    with pytest.raises(PhotoRefused, match=r"fake.jpg: not a JPEG, PNG, WebP or TIFF image"):
        load_photo(fake, LIMIT)


def test_a_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    whole = jpeg_with_gps(tmp_path / "whole.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PhotoRefused, match="Givre can read"):
        load_photo(cut, LIMIT)


def test_the_clinic_limit_comes_from_the_config() -> None:
    assert Config().max_photo_bytes == 20_000_000
    assert Config(max_photo_mb=2).max_photo_bytes == 2_000_000


def test_run_refuses_a_symlinked_photo_in_one_line_before_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "lesion.jpg"
    link.symlink_to(jpeg_with_gps(tmp_path / "real.jpg"))
    db = tmp_path / "r.sqlite"
    code = main(["run", "--manual", "--profile", "common-wart", "--site", "hand", "--photo", str(link), "--db", str(db), "--yes"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a symbolic link" in err and not db.exists()


def test_run_refuses_a_photo_over_the_clinics_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("max_photo_mb = 0.001\n")  # 1000 bytes
    photo = tmp_path / "lesion.jpg"
    photo.write_bytes(b"\xff" * 2000)
    code = main(["run", "--manual", "--profile", "common-wart", "--site", "hand", "--photo", str(photo), "--config", str(config),
                 "--db", str(tmp_path / "r.sqlite"), "--yes"])
    err = capsys.readouterr().err
    assert code == 2 and "above the clinic's limit of 0.001 MB. Give a smaller photo, or raise max_photo_mb" in err
