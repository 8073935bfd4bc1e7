"""Recorded sessions: the on-disk format and its loader.

A session is a folder that holds what the live sources would have seen, so a replay can
drive the whole agent without hardware (see `agent.sources.replay`). Format version 1::

    my-session/
      manifest.yaml
      heart.csv          optional, one row per Heart Rate Measurement notification
      eda.csv            optional, one row per skin-conductance sample
      frames.csv         optional, one row per camera frame, naming an image file
      frames/0001.pgm    the images (any path inside the folder)

manifest.yaml (every key below is required; keys starting with ``x-`` are ignored, so a
recorder may add its own metadata; any other unknown key is an error, so a typo never
silently drops data)::

    format: emotion-agent-session   # exactly this
    version: 1                      # a loader refuses versions it does not know
    start: 2024-05-01T09:00:00Z     # recording start, ISO-8601 with a UTC offset
    duration_s: 600                 # > 0; no row may have t > duration_s
    synthetic: false                # true when generated rather than recorded
    description: Who, what, how.    # free text: people, devices, protocol or generator
    license: CC-BY-4.0              # license of the data (images carry their own too)
    modalities:                     # at least one of:
      heart: {file: heart.csv}
      eda: {file: eda.csv, rate_hz: 4}
      camera: {frames: frames.csv}

CSV files are UTF-8 (a BOM is tolerated), comma-separated, with a header line naming
exactly the columns below (any order); blank lines are ignored. In every file ``t`` is
seconds from ``start`` (a decimal number >= 0) and must never go backwards; equal times
are allowed. Paths are relative to the session folder and must stay inside it.

heart.csv -- header ``t,hr,rr_ms,contact``
    t: when the notification arrived. hr: heart rate in bpm, an integer 0-65535 as the
    strap sent it (0 is what a strap may send without skin contact). rr_ms: zero or more
    RR intervals in milliseconds separated by spaces; an empty field is normal (a
    notification between beats). Straps count RR in 1/1024 s, so a faithful recording
    writes ``n * 1000 / 1024`` exactly (e.g. ``1016.6015625``). contact: ``1``, ``0``, or
    empty when the strap does not report contact. A dropped notification is a missing row.

eda.csv -- header ``t,microsiemens``
    One sample per row; microsiemens >= 0. ``rate_hz`` in the manifest is the nominal
    sample rate; missing samples are simply missing rows (t shows the gap).

frames.csv -- header ``t,file,license``
    file: an image path; license: the license of that image (required, non-empty: faces
    are personal data and photos have authors). Supported images: binary netpbm, PGM
    (``P5``, grayscale -> (H, W) uint8) and PPM (``P6``, RGB -> (H, W, 3) uint8), read with
    numpy alone; PNG and JPEG with Pillow (a dependency). A sample depth above 8 bits is
    scaled to uint8. Frames are decoded only when played. Video files are out of scope:
    extract frames first (e.g. ``ffmpeg -i in.mp4 -vf fps=5 frames/%05d.pgm``).

Every defect in a session raises `SessionError` with the file, the line and what is wrong,
so a user fixes the data instead of reading a traceback.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

FORMAT = "emotion-agent-session"
VERSION = 1
MANIFEST = "manifest.yaml"
MODALITIES = ("heart", "eda", "camera")

_REQUIRED = ("format", "version", "start", "duration_s", "synthetic", "description", "license")
_MODALITY_KEYS = {"heart": {"file"}, "eda": {"file", "rate_hz"}, "camera": {"frames"}}
_NETPBM = {".pgm", ".ppm", ".pnm"}
_PILLOW = {".png", ".jpg", ".jpeg"}
# Python's float() also takes "nan", "inf" and "1_000"; a data file should not.
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"\d+")
_CONTACT: dict[str, bool | None] = {"1": True, "0": False, "": None}


class SessionError(Exception):
    """A session that cannot be used; the message names the file, line and defect."""

    def __init__(self, message: str, file: Path | str | None = None, line: int | None = None):
        where = "" if file is None else f"{file}" + ("" if line is None else f", line {line}")
        super().__init__(f"{where}: {message}" if where else message)
        self.file = None if file is None else str(file)
        self.line = line


class HeartRow(NamedTuple):
    t: float
    hr: int
    rr_ms: tuple[float, ...]
    contact: bool | None


class EdaRow(NamedTuple):
    t: float
    microsiemens: float


class FrameRow(NamedTuple):
    t: float
    file: Path  # absolute: session folder / the path in frames.csv
    license: str


@dataclass(frozen=True)
class Session:
    """A loaded, validated session; rows are sorted by t (seconds from `start`)."""

    path: Path
    version: int
    start: datetime
    origin: float  # `start` as UNIX seconds
    duration_s: float
    synthetic: bool
    description: str = field(repr=False)
    license: str
    modalities: tuple[str, ...]  # those present, in MODALITIES order
    eda_rate_hz: float | None
    _heart: tuple[HeartRow, ...] = field(default=(), repr=False, compare=False)
    _eda: tuple[EdaRow, ...] = field(default=(), repr=False, compare=False)
    _frames: tuple[FrameRow, ...] = field(default=(), repr=False, compare=False)

    def heart_rows(self) -> tuple[HeartRow, ...]:
        return self._heart

    def eda_rows(self) -> tuple[EdaRow, ...]:
        return self._eda

    def frame_rows(self) -> tuple[FrameRow, ...]:
        return self._frames

    def load_frame(self, row: FrameRow) -> np.ndarray:
        """Decode one frame: (H, W) or (H, W, 3) uint8."""
        return read_image(row.file)


def demo_session_path() -> Path:
    """The demo session shipped with the package (agent/sessions/demo): a real face and
    real wrist physiology (see its manifest and agent/sessions/build_demo.py)."""
    return Path(str(files("agent.sessions") / "demo"))


def synthetic_session_path() -> Path:
    """The synthetic session shipped with the package (agent/sessions/synthetic): heart
    and EDA with known properties, for tests and the benchmark."""
    return Path(str(files("agent.sessions") / "synthetic"))


def load_session(path: str | Path) -> Session:
    """Load and validate a session folder (or its manifest.yaml); see the module docstring."""
    path = Path(path)
    folder = path.parent if path.name == MANIFEST and path.is_file() else path
    if not folder.is_dir():
        raise SessionError("no such session folder", folder)
    manifest_path = folder / MANIFEST
    manifest, lines = _read_manifest(manifest_path)

    def fail(key: str, message: str) -> SessionError:
        return SessionError(f"{key}: {message}", manifest_path, lines.get(key))

    for key in manifest:
        if key not in (*_REQUIRED, "modalities") and not str(key).startswith("x-"):
            raise fail(str(key), "unknown key (extensions must start with 'x-')")
    for key in (*_REQUIRED, "modalities"):
        if key not in manifest:
            raise SessionError(f"missing required key '{key}'", manifest_path)
    if manifest["format"] != FORMAT:
        raise fail("format", f"expected '{FORMAT}', got {manifest['format']!r}")
    version = manifest["version"]
    if version != VERSION or isinstance(version, bool):
        raise fail("version", f"unsupported version {version!r} (this agent reads {VERSION})")
    start = _parse_start(manifest["start"], fail)
    duration = manifest["duration_s"]
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise fail("duration_s", f"expected a number of seconds, got {duration!r}")
    if not (math.isfinite(duration) and duration > 0):
        raise fail("duration_s", f"must be > 0, got {duration!r}")
    if not isinstance(manifest["synthetic"], bool):
        raise fail("synthetic", f"expected true or false, got {manifest['synthetic']!r}")
    for key in ("description", "license"):
        if not isinstance(manifest[key], str) or not manifest[key].strip():
            raise fail(key, "expected non-empty text")

    mods = manifest["modalities"]
    if not isinstance(mods, dict) or not mods:
        raise fail("modalities", "expected a mapping with at least one of " + ", ".join(MODALITIES))
    for name, spec in mods.items():
        where = f"modalities.{name}"
        if name not in MODALITIES:
            raise fail(where, f"unknown modality (known: {', '.join(MODALITIES)})")
        if not isinstance(spec, dict) or set(spec) != _MODALITY_KEYS[name]:
            keys = ", ".join(sorted(_MODALITY_KEYS[name]))
            raise fail(where, f"expected exactly the keys {keys}, got {spec!r}")

    def data_file(name: str, key: str) -> Path:
        return _inside(folder, mods[name][key], manifest_path, lines.get(f"modalities.{name}"))

    ctx = _Ctx(folder=folder, duration=float(duration))
    heart = _read_heart(data_file("heart", "file"), ctx) if "heart" in mods else ()
    eda_rate = None
    eda: tuple[EdaRow, ...] = ()
    if "eda" in mods:
        eda_rate = mods["eda"]["rate_hz"]
        if isinstance(eda_rate, bool) or not isinstance(eda_rate, int | float) or eda_rate <= 0:
            raise fail("modalities.eda", f"rate_hz must be a number > 0, got {eda_rate!r}")
        eda = _read_eda(data_file("eda", "file"), ctx)
    frames = _read_frames(data_file("camera", "frames"), ctx) if "camera" in mods else ()
    return Session(
        path=folder,
        version=VERSION,
        start=start,
        origin=start.timestamp(),
        duration_s=float(duration),
        synthetic=manifest["synthetic"],
        description=manifest["description"].strip(),
        license=manifest["license"].strip(),
        modalities=tuple(m for m in MODALITIES if m in mods),
        eda_rate_hz=None if eda_rate is None else float(eda_rate),
        _heart=heart,
        _eda=eda,
        _frames=frames,
    )


def _read_manifest(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The manifest as a dict, plus the line of each key (nested as 'modalities.heart')."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SessionError("missing: a session folder needs a manifest.yaml", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionError(f"cannot read: {exc}", path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = None if mark is None else mark.line + 1
        raise SessionError(f"not valid YAML: {problem}", path, line) from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise SessionError("expected a YAML mapping (key: value lines)", path)
    lines: dict[str, int] = {}
    for key, value in node.value:
        name = str(key.value)
        if name in lines:  # safe_load would silently keep the last one
            raise SessionError(f"duplicate key '{name}'", path, key.start_mark.line + 1)
        lines[name] = key.start_mark.line + 1
        if name == "modalities" and isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                sub_name, sub_line = f"modalities.{sub.value}", sub.start_mark.line + 1
                if sub_name in lines:
                    raise SessionError(f"duplicate key '{sub_name}'", path, sub_line)
                lines[sub_name] = sub_line
    return data, lines


def _parse_start(value: object, fail: Any) -> datetime:
    # YAML turns an unquoted timestamp into a datetime already; a quoted one stays text.
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail("start", f"not an ISO-8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise fail("start", f"expected an ISO-8601 date and time, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise fail("start", "needs a UTC offset, e.g. 2024-05-01T09:00:00Z")
    return value.astimezone(UTC)


def _inside(folder: Path, value: object, file: Path, line: int | None) -> Path:
    """`folder / value`, refusing paths that would leave the session folder."""
    if not isinstance(value, str) or not value.strip():
        raise SessionError(f"expected a file name, got {value!r}", file, line)
    rel = Path(value.strip())
    if rel.is_absolute() or ".." in rel.parts:
        raise SessionError(f"path must stay inside the session folder: {value!r}", file, line)
    return folder / rel


@dataclass
class _Ctx:
    folder: Path
    duration: float


def _rows(
    path: Path, columns: tuple[str, ...], ctx: _Ctx
) -> Iterator[tuple[int, float, dict[str, str]]]:
    """Yield (line, t, fields) for each data row, checking header, field count and t."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise SessionError("missing file named in manifest.yaml", path) from None
    except OSError as exc:
        raise SessionError(f"cannot read: {exc}", path) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise SessionError(f"empty; expected the header {','.join(columns)}", path, 1)
            missing = [c for c in columns if c not in header]
            if missing or len(header) != len(columns):
                what = f"missing column '{missing[0]}'" if missing else "unexpected column(s)"
                raise SessionError(
                    f"{what}: header is {','.join(header)}, expected {','.join(columns)}", path, 1
                )
            prev_t = 0.0
            for raw in reader:
                line = reader.line_num
                if not raw or (len(raw) == 1 and not raw[0].strip()):
                    continue
                if len(raw) != len(header):
                    raise SessionError(f"expected {len(header)} fields, got {len(raw)}", path, line)
                row = {h: v.strip() for h, v in zip(header, raw, strict=True)}
                t = _decimal(row["t"], "t", path, line)
                if t < 0:
                    raise SessionError(f"t must be >= 0, got {row['t']}", path, line)
                if t < prev_t:
                    raise SessionError(
                        f"t goes backwards ({row['t']} after {prev_t:g})", path, line
                    )
                if t > ctx.duration:
                    raise SessionError(
                        f"t={row['t']} is past duration_s={ctx.duration:g}", path, line
                    )
                prev_t = t
                yield line, t, row
        except UnicodeDecodeError as exc:
            raise SessionError(
                f"not UTF-8 text ({exc.reason})", path, reader.line_num + 1
            ) from None
        except csv.Error as exc:
            raise SessionError(f"malformed CSV: {exc}", path, reader.line_num) from None


def _decimal(value: str, column: str, path: Path, line: int) -> float:
    if not _DECIMAL.fullmatch(value):
        raise SessionError(f"{column}: not a number: {value!r}", path, line)
    return float(value)


def _read_heart(path: Path, ctx: _Ctx) -> tuple[HeartRow, ...]:
    out = []
    for line, t, row in _rows(path, ("t", "hr", "rr_ms", "contact"), ctx):
        if not _INTEGER.fullmatch(row["hr"]) or int(row["hr"]) > 65535:
            raise SessionError(f"hr: expected an integer 0-65535, got {row['hr']!r}", path, line)
        rr = tuple(_decimal(v, "rr_ms", path, line) for v in row["rr_ms"].split())
        if any(v <= 0 for v in rr):
            raise SessionError(f"rr_ms: intervals must be > 0, got {row['rr_ms']!r}", path, line)
        if row["contact"] not in _CONTACT:
            raise SessionError(
                f"contact: expected 1, 0 or empty, got {row['contact']!r}", path, line
            )
        out.append(HeartRow(t, int(row["hr"]), rr, _CONTACT[row["contact"]]))
    return tuple(out)


def _read_eda(path: Path, ctx: _Ctx) -> tuple[EdaRow, ...]:
    out = []
    for line, t, row in _rows(path, ("t", "microsiemens"), ctx):
        value = _decimal(row["microsiemens"], "microsiemens", path, line)
        if value < 0:
            raise SessionError(f"microsiemens must be >= 0, got {row['microsiemens']}", path, line)
        out.append(EdaRow(t, value))
    return tuple(out)


def _read_frames(path: Path, ctx: _Ctx) -> tuple[FrameRow, ...]:
    out = []
    for line, t, row in _rows(path, ("t", "file", "license"), ctx):
        image = _inside(ctx.folder, row["file"], path, line)
        suffix = image.suffix.lower()
        if suffix not in _NETPBM | _PILLOW:
            raise SessionError(
                f"{row['file']}: unsupported image type (PGM, PPM, PNG or JPEG; "
                "video is not supported: extract frames)",
                path,
                line,
            )
        if not image.is_file():
            raise SessionError(f"image file not found: {row['file']}", path, line)
        if not row["license"]:
            raise SessionError(f"{row['file']}: every image needs a license", path, line)
        out.append(FrameRow(t, image, row["license"]))
    return tuple(out)


def read_image(path: str | Path) -> np.ndarray:
    """Decode PGM/PPM with numpy, PNG/JPEG with Pillow (a dependency): (H, W) or (H, W, 3)
    uint8."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _NETPBM:
        return read_netpbm(path)
    if suffix not in _PILLOW:
        raise SessionError("unsupported image type (PGM, PPM, PNG, JPEG)", path)
    try:
        from PIL import Image
    except ImportError:
        raise SessionError(
            "PNG/JPEG are decoded by Pillow, a dependency of emotion-agent that is missing "
            "here: pip install pillow (or apt install python3-pil)",
            path,
        ) from None
    try:
        with Image.open(path) as img:
            gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise SessionError(f"cannot decode image: {exc}", path) from None


def read_netpbm(path: str | Path) -> np.ndarray:
    """A strict reader for binary PGM (P5) and PPM (P6): (H, W) or (H, W, 3) uint8.

    Strict because a lenient reader turns a truncated or mislabelled file into a frame of
    garbage that the vision pipeline would happily score.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SessionError(f"cannot read image: {exc}", path) from None
    magic = data[:2]
    if magic not in (b"P5", b"P6"):
        raise SessionError(f"not a binary PGM/PPM (magic {magic!r}; P5 or P6 expected)", path)
    channels = 1 if magic == b"P5" else 3
    pos, fields = 2, []
    while len(fields) < 3:
        start = pos
        while pos < len(data) and (data[pos : pos + 1].isspace() or data[pos] == ord("#")):
            if data[pos] == ord("#"):  # a comment runs to the end of its line
                while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                    pos += 1
            else:
                pos += 1
        if pos == start or pos >= len(data):
            raise SessionError("malformed netpbm header (truncated or missing whitespace)", path)
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if pos == start:
            raise SessionError(f"malformed netpbm header: expected a number at byte {start}", path)
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if pos >= len(data) or not data[pos : pos + 1].isspace():
        raise SessionError("malformed netpbm header: no whitespace after maxval", path)
    pos += 1  # exactly one whitespace byte separates the header from the raster
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        raise SessionError(f"bad netpbm size or maxval ({width}x{height}, maxval {maxval})", path)
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    expected = width * height * channels * dtype.itemsize
    raster = data[pos:]
    if len(raster) != expected:
        what = "truncated" if len(raster) < expected else "trailing data (one image per file)"
        raise SessionError(
            f"{what}: expected {expected} bytes of pixels, found {len(raster)}", path
        )
    pixels = np.frombuffer(raster, dtype=dtype)
    if int(pixels.max()) > maxval:
        raise SessionError(f"a sample exceeds maxval {maxval}", path)
    if maxval != 255:
        pixels = (pixels.astype(np.uint32) * 255 + maxval // 2) // maxval
    shape = (height, width) if channels == 1 else (height, width, 3)
    return pixels.astype(np.uint8).reshape(shape)
