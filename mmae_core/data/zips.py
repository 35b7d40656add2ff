"""Opening an uploaded ``.zip`` safely: refuse zip slip and zip bombs before a byte is extracted.

Every member name is checked before anything is written (no absolute paths, no ``..``), and the
declared sizes are checked against a total limit and a compression-ratio limit; then only the
members the layout will use are copied, each to a path we build under our own temp folder.
``zipfile`` stops reading a member at its declared size and checks its CRC, so a member cannot
write more than the sizes we checked.
"""
from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from pathlib import Path

from mmae_core.errors import DataError

MAX_RATIO = 200  # uncompressed / compressed, over the whole archive
ZIP_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


def safe_relpath(name: str, where: str) -> str:
    """A member or upload name as a clean relative posix path; refuse anything that could escape."""
    n = name.replace("\\", "/")
    parts = n.split("/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n) or ".." in parts or "\x00" in n:
        raise DataError(
            f"{where} contains the entry '{name}', which points outside its folder, so nothing was extracted; "
            "rebuild it with relative paths only."
        )
    clean = "/".join(p for p in parts if p not in ("", "."))
    return clean


def check_expansion(infos: list[zipfile.ZipInfo], shown: str, max_uncompressed: int) -> None:
    """The limits every zip-format archive (``.zip`` and ``.npz``) must meet before a byte is read:
    the declared total size, and the ratio of that size to the packed one."""
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if total > max_uncompressed:
        raise DataError(
            f"{shown} would unpack to {total / 2**30:.2f} GiB, more than the {max_uncompressed / 2**30:.2f} GiB limit, "
            "so nothing was extracted; split the data or load the folder from disk."
        )
    if total > MAX_RATIO * max(packed, 1) and total > 0:
        raise DataError(
            f"{shown} unpacks to {total / max(packed, 1):.0f} times its packed size (the limit is {MAX_RATIO}), "
            "which is how zip bombs look, so nothing was extracted; save the files without such padding."
        )


def open_checked(path: Path, shown: str, max_uncompressed: int) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """Open the archive and vet every member; returns the archive and its files by clean relative path."""
    if path.stat().st_size == 0:
        raise DataError(f"{shown} is empty (0 bytes); create the zip again.")
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except ZIP_ERRORS as exc:
        raise DataError(f"{shown} could not be opened as a zip archive (it looks truncated or corrupt); create it again.") from exc
    try:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            rel = safe_relpath(info.filename, shown)
            if info.is_dir() or not rel:
                continue
            if info.flag_bits & 0x1:
                raise DataError(f"{rel} in {shown} is encrypted; create the zip without a password.")
            if rel in members:
                raise DataError(f"{shown} holds '{rel}' twice; create the zip again with each file once.")
            members[rel] = info
        check_expansion(infos, shown, max_uncompressed)
    except BaseException:
        zf.close()
        raise
    return zf, members


def extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: str, dest: Path, shown: str) -> Path:
    """Copy one vetted member to ``dest/rel`` (a path we built, never the archive's own)."""
    target = (dest / rel).resolve()
    root = dest.resolve()
    if root not in target.parents:
        raise DataError(f"{shown} contains the entry '{info.filename}', which points outside its folder; rebuild it with relative paths only.")
    target.parent.mkdir(parents=True, exist_ok=True)
    return extract_to(zf, info, target, f"{rel} in {shown}")


def extract_to(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, shown: str) -> Path:
    """Copy one vetted member to ``target``, a file name we chose; ``shown`` names the member."""
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 4 * 2**20)
    except NotImplementedError as exc:
        raise DataError(f"{shown} uses a compression method Python cannot read; zip it with deflate.") from exc
    except ZIP_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the disk, not the archive (a full disk becomes its own sentence further up)
        raise DataError(f"{shown} could not be extracted (the archive looks truncated or corrupt); create it again.") from exc
    return target
