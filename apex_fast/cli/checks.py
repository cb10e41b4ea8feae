"""Checks the commands run before any work: paths the user named, and notes for the user.

Everything here raises `ApexError` (one line, exit code 2 in `apex_fast.cli.root.main`) and
imports nothing numerical, so a bad path is reported before the simulation stack loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from apex_fast.errors import ApexError


def short_path(path: Path | str) -> str:
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]


def check_output_path(path: Path, flag: str) -> None:
    """Fail before the search, not after it, when an output file cannot be written (folder
    missing or not writable, name too long, a directory in its place)."""
    import errno
    import os

    shown = short_path(path)
    try:
        if path.is_dir():
            raise ApexError(f"{flag} {shown} is a directory; give a file name")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise ApexError(f"{flag} {shown}: folder {short_path(parent)} does not exist")
        name_max = os.pathconf(parent, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        if len(os.fsencode(path.name)) > name_max:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        if not os.access(parent, os.W_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        if path.exists() and not os.access(path, os.W_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise ApexError(f"{flag} {shown}: cannot write there: {e.strerror or e}") from None


def check_input_file(path: Path, flag: str) -> None:
    """A file name the operating system refuses (too long, a file in place of a folder on the
    way, no permission) is said with the flag; a missing file is left to its loader."""
    try:
        path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise ApexError(f"{flag} {short_path(path)}: {e.strerror or e}") from None


def check_input_dir(path: Path, flag: str) -> None:
    """A folder the user named must exist and be a folder."""
    shown = short_path(path)
    try:
        if path.is_file():
            raise ApexError(f"{flag} {shown} is a file; give the folder that holds the tables")
        if not path.is_dir():
            raise ApexError(f"{flag} {shown} does not exist")
    except OSError as e:
        raise ApexError(f"{flag} {shown}: {e.strerror or e}") from None


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def check_no_bom(path: Path, flag: str) -> None:
    """A UTF-8 byte order mark (some Windows editors add one) is named as such, instead of the
    first line being reported as not valid JSON or a CSV header as lacking its columns."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return  # the trace loader reports unreadable files
    if head.startswith(b"\xef\xbb\xbf") or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ApexError(
            f"{flag} {short_path(path)} starts with a byte order mark (BOM); save it as UTF-8 "
            "without a BOM"
        )


def check_trace_file(path: Path | None) -> None:
    """--trace-file: a name the system refuses, or a file starting with a byte order mark."""
    if path is None:
        return
    check_input_file(path, "--trace-file")
    if is_file(path):  # a missing trace is said by its loader
        check_no_bom(path, "--trace-file")


def percentiles(values: list[str] | None, flag: str) -> tuple[float, ...]:
    """`--request-percentiles 90 99` / `90,99`: numbers in [0, 100]."""
    out: list[float] = []
    for v in values or []:
        for part in str(v).replace(",", " ").split():
            try:
                p = float(part)
            except ValueError:
                raise ApexError(f"{flag}: {part!r} is not a number") from None
            if not (0.0 <= p <= 100.0):
                raise ApexError(f"{flag}: percentile {part} is outside [0, 100]")
            out.append(p)
    return tuple(out)


def kernel_cache_present() -> bool:
    """Whether Numba has a compiled copy of the batching kernel on disk (cache=True writes it
    to __pycache__ beside the source, or under NUMBA_CACHE_DIR)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("apex_fast.kernels.batching")
    if spec is None or spec.origin is None:
        return True
    src = Path(spec.origin)
    folders = [src.parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        folders.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    for folder in folders:
        try:
            if any(folder.rglob(f"{src.stem}.*.nbi")):
                return True
        except OSError:
            continue
    return not os.access(src.parent, os.W_OK)  # cache elsewhere: we cannot tell


def compile_note() -> None:
    """Say once, on the first run, why it takes a few seconds before anything happens."""
    if not kernel_cache_present():
        sys.stderr.write(
            "note: first run: compiling the simulation kernel (about 5 s; later runs reuse it)\n"
        )
