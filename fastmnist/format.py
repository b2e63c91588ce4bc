"""Read and write the weights container (docs/FORMAT.md): a JSON spec plus named arrays in an .npz.

`read` checks the container (zip structure, array headers, dtypes, sizes, the JSON, format name and version)
before it allocates anything; whether the layers fit together is `fastmnist.spec`'s job.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import WeightsFormatError

FORMAT_NAME = "fastmnist-weights"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # a version 1 file is a version 2 file without the new features
ARRAY_DTYPES = (np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int32))  # which layer takes which: spec.parse
SPEC_ARRAY = "spec"
MAX_ARRAY_BYTES = 256 << 20
MAX_SPEC_BYTES = 1 << 20
MAX_ARRAYS = 1024
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def save(path: str | os.PathLike, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `spec` (a JSON-able dict) and `arrays` (name -> array) to `path`. int8 and int32 arrays are stored
    as they are; any other array is stored as float32."""
    if SPEC_ARRAY in arrays:
        raise ValueError(f"array name {SPEC_ARRAY!r} is reserved for the spec")
    text = json.dumps(spec, indent=1, allow_nan=False).encode("utf-8")
    payload = {SPEC_ARRAY: np.frombuffer(text, dtype=np.uint8)}
    for name, value in arrays.items():
        value = np.asarray(value)
        dtype = value.dtype if value.dtype in (np.int8, np.int32) else np.float32
        payload[name] = np.ascontiguousarray(value, dtype=dtype)
    path = Path(path)
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
        np.savez(f, **payload)
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a weights file: (spec dict, {name: float32, int8 or int32 array}). Raises WeightsFormatError."""
    where = f"weights file '{path}'"
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise WeightsFormatError(f"{where}: no such file") from None
    except Exception as e:  # a corrupt central directory raises BadZipFile, NotImplementedError, struct.error, ...
        raise WeightsFormatError(f"{where}: not an .npz (zip) archive ({type(e).__name__}: {e})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ARRAYS:
            raise WeightsFormatError(f"{where}: {len(members)} entries, expected at most {MAX_ARRAYS}")
        arrays = {}
        for info in members:
            name = _array_name(where, info.filename)
            if name in arrays:
                raise WeightsFormatError(f"{where}: array '{name}' is stored twice")
            arrays[name] = _read_member(archive, info, f"{where}: array '{name}'")
    if SPEC_ARRAY not in arrays:
        raise WeightsFormatError(f"{where}: no '{SPEC_ARRAY}' array; this is not a fastmnist weights file")
    spec = _parse_spec(arrays.pop(SPEC_ARRAY), where)
    return spec, arrays


def _array_name(where: str, filename: str) -> str:
    if not filename.endswith(".npy"):
        raise WeightsFormatError(f"{where}: entry '{filename}' is not an .npy array")
    return filename[: -len(".npy")]


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    is_spec = info.filename == SPEC_ARRAY + ".npy"
    expected = (np.dtype(np.uint8),) if is_spec else ARRAY_DTYPES
    limit = MAX_SPEC_BYTES if is_spec else MAX_ARRAY_BYTES
    if info.file_size > limit + 4096:
        raise WeightsFormatError(f"{where}: {info.file_size} bytes, expected at most {limit}")
    try:
        with archive.open(info) as stream:
            read_header = _HEADER_READERS.get(np.lib.format.read_magic(stream))
            if read_header is None:
                raise WeightsFormatError(f"{where}: unknown .npy header version")
            shape, fortran_order, dtype = read_header(stream)
            header_bytes = stream.tell()
            if dtype.hasobject:
                raise WeightsFormatError(f"{where}: dtype {dtype} holds Python objects, which are never loaded")
            native = dtype.newbyteorder("=")
            if native not in expected:
                raise WeightsFormatError(f"{where}: dtype {dtype}, expected {' or '.join(map(str, expected))}")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if count * dtype.itemsize != info.file_size - header_bytes:
                raise WeightsFormatError(
                    f"{where}: header claims shape {shape} ({count * dtype.itemsize} bytes) but the entry holds "
                    f"{info.file_size - header_bytes} bytes of data")
            data = stream.read(count * dtype.itemsize)
    except WeightsFormatError:
        raise
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, tokenize errors, ...
        raise WeightsFormatError(f"{where}: unreadable ({type(e).__name__}: {e})") from None
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return np.ascontiguousarray(array, dtype=native)


def _parse_spec(raw: np.ndarray, where: str) -> dict[str, Any]:
    if raw.ndim != 1:
        raise WeightsFormatError(f"{where}: '{SPEC_ARRAY}' has shape {raw.shape}, expected (n,) UTF-8 bytes")
    try:
        spec = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsFormatError(f"{where}: the spec is not valid UTF-8 JSON ({e})") from None
    if not isinstance(spec, dict):
        raise WeightsFormatError(f"{where}: the spec is a JSON {type(spec).__name__}, expected an object")
    if spec.get("format") != FORMAT_NAME:
        raise WeightsFormatError(f"{where}: format is {spec.get('format')!r}, expected {FORMAT_NAME!r}")
    if type(spec.get("version")) is not int or spec["version"] not in READABLE_VERSIONS:
        raise WeightsFormatError(
            f"{where}: format version {spec.get('version')!r}, this reader knows versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}")
    return spec


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")
