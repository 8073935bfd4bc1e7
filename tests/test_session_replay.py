"""Recorded-session format, its loader, the replay sources and the bundled demo session."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from pathlib import Path

import numpy as np
import pytest

from agent.clock import ScaledClock
from agent.events import EdaEvent, Event, FrameEvent, HeartEvent
from agent.sessions import generate_synthetic
from agent.sources.replay import (
    LATE_GRACE_REAL_S,
    LATE_GRACE_S,
    ReplayCameraSource,
    ReplayEdaSource,
    ReplayHeartSource,
    replay_sources,
    window_closing,
)
from agent.sources.session import (
    EdaRow,
    HeartRow,
    SessionError,
    load_session,
    read_netpbm,
    synthetic_session_path,
)

MANIFEST = """\
format: emotion-agent-session
version: 1
start: 2024-05-01T09:00:00Z
duration_s: 10
synthetic: true
description: A tiny test session.
license: CC0-1.0
modalities:
  heart: {file: heart.csv}
  eda: {file: eda.csv, rate_hz: 4}
  camera: {frames: frames.csv}
"""
HEART = "t,hr,rr_ms,contact\n0.5,60,1000 990.234375,1\n1.5,61,,\n2.5,0,,0\n"
EDA = "t,microsiemens\n0,2.0\n0.25,2.1\n0.5,2.2\n0.75,2.3\n1.0,2.4\n"
FRAMES = "t,file,license\n0.2,frames/a.pgm,CC0-1.0\n1.2,frames/b.ppm,CC-BY-4.0\n"


def write_pnm(path: Path, image: np.ndarray) -> None:
    magic = b"P5" if image.ndim == 2 else b"P6"
    height, width = image.shape[:2]
    path.write_bytes(
        magic + b"\n# made by a test\n%d %d\n255\n" % (width, height) + image.tobytes()
    )


def make_session(root: Path, **overrides: str) -> Path:
    files = {"manifest.yaml": MANIFEST, "heart.csv": HEART, "eda.csv": EDA, "frames.csv": FRAMES}
    files.update(overrides)
    root.mkdir(parents=True, exist_ok=True)
    (root / "frames").mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    write_pnm(root / "frames" / "a.pgm", gray)
    write_pnm(root / "frames" / "b.ppm", np.stack([gray, gray // 2, 255 - gray], axis=-1))
    return root


class ListSink:
    def __init__(self, clock: object) -> None:
        self.clock = clock
        self.events: list[Event] = []
        self.emitted_at: list[float] = []

    def put(self, event: Event) -> None:
        self.events.append(event)
        self.emitted_at.append(self.clock.now())  # type: ignore[attr-defined]


class JumpClock:
    """A clock that jumps to whatever time is awaited: deterministic replays in no time."""

    speed = 1.0

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)
        await asyncio.sleep(0)


# --- loader -------------------------------------------------------------------------------


def test_loader_round_trips_a_small_session(tmp_path: Path) -> None:
    session = load_session(make_session(tmp_path / "s"))
    assert session.origin == 1714554000.0
    assert session.duration_s == 10.0 and session.synthetic and session.license == "CC0-1.0"
    assert session.modalities == ("heart", "eda", "camera")
    assert session.heart_rows() == (
        HeartRow(0.5, 60, (1000.0, 990.234375), True),
        HeartRow(1.5, 61, (), None),
        HeartRow(2.5, 0, (), False),
    )
    assert session.eda_rate_hz == 4.0
    assert session.eda_rows()[1] == EdaRow(0.25, 2.1) and len(session.eda_rows()) == 5
    frames = session.frame_rows()
    assert [f.license for f in frames] == ["CC0-1.0", "CC-BY-4.0"]
    gray = session.load_frame(frames[0])
    assert gray.shape == (12, 16) and gray.dtype == np.uint8 and gray[1, 0] == 16
    rgb = session.load_frame(frames[1])
    assert rgb.shape == (12, 16, 3) and rgb[0, 1].tolist() == [1, 0, 254]
    # the manifest path itself is accepted too
    assert load_session(tmp_path / "s" / "manifest.yaml").heart_rows() == session.heart_rows()


def test_netpbm_scales_deeper_samples_and_is_strict(tmp_path: Path) -> None:
    deep = tmp_path / "deep.pgm"
    deep.write_bytes(b"P5 2 1 1023\n" + np.array([0, 1023], dtype=">u2").tobytes())
    assert read_netpbm(deep).tolist() == [[0, 255]]
    short = tmp_path / "short.pgm"
    short.write_bytes(b"P5 4 4 255\n" + bytes(15))
    with pytest.raises(SessionError, match=r"short\.pgm.*truncated"):
        read_netpbm(short)
    ascii_pgm = tmp_path / "ascii.pgm"
    ascii_pgm.write_bytes(b"P2 1 1 255\n7\n")
    with pytest.raises(SessionError, match="P5 or P6"):
        read_netpbm(ascii_pgm)


def manifest_with(old: str, new: str) -> str:
    assert old in MANIFEST
    return MANIFEST.replace(old, new)


BAD_INPUTS = [
    # (file overrides, file named in the error, line, what the message says)
    (
        {"manifest.yaml": manifest_with("emotion-agent-session", "other")},
        "manifest.yaml",
        1,
        "format",
    ),
    ({"manifest.yaml": manifest_with("version: 1", "version: 2")}, "manifest.yaml", 2, "version 2"),
    ({"manifest.yaml": manifest_with("Z\n", "\n")}, "manifest.yaml", 3, "UTC offset"),
    (
        {"manifest.yaml": manifest_with("duration_s: 10", "duraton_s: 10")},
        "manifest.yaml",
        4,
        "unknown key",
    ),
    ({"manifest.yaml": manifest_with("synthetic: true\n", "")}, "manifest.yaml", None, "synthetic"),
    ({"manifest.yaml": manifest_with("heart.csv", "nope.csv")}, "nope.csv", None, "missing file"),
    (
        {"manifest.yaml": manifest_with("  eda:", "  audio: {file: a.wav}\n  eda:")},
        "manifest.yaml",
        10,
        "unknown modality",
    ),
    ({"manifest.yaml": MANIFEST + "  heart: {file: x.csv}\n"}, "manifest.yaml", 12, "duplicate"),
    ({"manifest.yaml": "format: [unclosed\n"}, "manifest.yaml", 2, "YAML"),
    ({"heart.csv": "t,hr,rr_ms\n0.5,60,1000\n"}, "heart.csv", 1, "missing column 'contact'"),
    ({"heart.csv": HEART + "3.5,6x,,1\n"}, "heart.csv", 5, "hr"),
    ({"heart.csv": HEART + "3.5,60,900 abc,1\n"}, "heart.csv", 5, "rr_ms: not a number"),
    ({"heart.csv": HEART + "3.5,60,nan,1\n"}, "heart.csv", 5, "rr_ms: not a number"),
    ({"heart.csv": HEART + "2.0,60,,1\n"}, "heart.csv", 5, "backwards"),
    ({"heart.csv": HEART + "3.5,60,,yes\n"}, "heart.csv", 5, "contact"),
    ({"heart.csv": HEART + "3.5,60,1\n"}, "heart.csv", 5, "expected 4 fields"),
    ({"heart.csv": HEART + "30,60,,1\n"}, "heart.csv", 5, "past duration_s"),
    ({"eda.csv": EDA + "1.25,-0.1\n"}, "eda.csv", 7, "microsiemens"),
    ({"eda.csv": EDA.replace("0.5,2.2", "0.5,2..2")}, "eda.csv", 4, "not a number"),
    ({"frames.csv": FRAMES + "2,frames/missing.pgm,CC0-1.0\n"}, "frames.csv", 4, "not found"),
    ({"frames.csv": FRAMES + "2,frames/a.pgm,\n"}, "frames.csv", 4, "license"),
    ({"frames.csv": FRAMES + "2,../escape.pgm,CC0-1.0\n"}, "frames.csv", 4, "inside the session"),
    ({"frames.csv": FRAMES + "2,clip.mp4,CC0-1.0\n"}, "frames.csv", 4, "video"),
]


@pytest.mark.parametrize(("files", "name", "line", "what"), BAD_INPUTS)
def test_malformed_input_names_file_and_line(
    tmp_path: Path, files: dict[str, str], name: str, line: int | None, what: str
) -> None:
    with pytest.raises(SessionError) as info:
        load_session(make_session(tmp_path / "s", **files))
    message = str(info.value)
    assert name in message and what in message, message
    assert info.value.file is not None and info.value.file.endswith(name)
    if line is not None:
        assert info.value.line == line and f"line {line}" in message, message


def test_missing_manifest_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="no such session folder"):
        load_session(tmp_path / "absent")
    with pytest.raises(SessionError, match=r"manifest\.yaml.*missing"):
        load_session(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_png_and_jpeg_frames_decode_out_of_the_box(tmp_path: Path, fmt: str) -> None:
    """Pillow is a dependency: a plain install reads PNG and JPEG frames."""
    from PIL import Image

    from agent.sources.session import read_image

    (tmp_path / "s").mkdir()
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # (48, 64)
    name = f"f.{fmt.lower()}"
    Image.fromarray(gradient).save(tmp_path / "s" / name, format=fmt, quality=95)
    session = load_session(
        make_session(tmp_path / "s", **{"frames.csv": FRAMES + f"2,{name},CC0-1.0\n"})
    )
    image = session.load_frame(session.frame_rows()[-1])
    assert image.shape == (48, 64) and image.dtype == np.uint8
    tolerance = 0 if fmt == "PNG" else 4  # JPEG is lossy
    assert np.abs(image.astype(int) - gradient).max() <= tolerance
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SessionError, match=r"bad\.png.*cannot decode"):
        read_image(tmp_path / "bad.png")


# --- replay -------------------------------------------------------------------------------


def test_replaying_the_demo_emits_in_time_order_at_the_right_times() -> None:
    session = load_session(synthetic_session_path())

    async def replay() -> tuple[ListSink, list]:
        clock = ScaledClock(origin=session.origin, speed=200)
        sink = ListSink(clock)
        sources = replay_sources(session, clock)
        await asyncio.gather(*(s.run(sink) for s in sources))
        return sink, sources

    started = time.monotonic()
    sink, sources = asyncio.run(replay())
    assert time.monotonic() - started < 30  # 600 s at 200x is 3 s
    assert [s.name for s in sources] == ["heart", "eda"]
    assert all(s.status.finished and s.status.extra["skipped"] == 0 for s in sources)

    heart = [e for e in sink.events if isinstance(e, HeartEvent)]
    eda = [e for e in sink.events if isinstance(e, EdaEvent)]
    assert [e.t - session.origin for e in heart] == pytest.approx(
        [r.t for r in session.heart_rows()], abs=1e-6
    )
    assert [e.rr_ms for e in heart] == [r.rr_ms for r in session.heart_rows()]
    # EDA: ~1 event per second of up to 4 samples, every sample exactly once, in order
    assert all(len(e.microsiemens) <= 4 and e.rate_hz == 4 for e in eda)
    samples = [v for e in eda for v in e.microsiemens]
    assert samples == [r.microsiemens for r in session.eda_rows()]
    assert eda[1].t - session.origin == pytest.approx(1.0)

    assert sink.emitted_at == sorted(sink.emitted_at)
    for kind in (heart, eda):
        times = [e.t for e in kind]
        assert times == sorted(times)
    # never early; late only by scheduling (a few ms of real time, x200)
    lateness = []
    for event, at in zip(sink.events, sink.emitted_at, strict=True):
        due = event.t + (0.75 if isinstance(event, EdaEvent) else 0.0)  # last sample's time
        assert at >= due - 1e-3
        lateness.append(at - due)
    assert float(np.median(lateness)) < 1.0  # clock seconds: 5 ms real at 200x


def test_speed_runs_a_20_s_slice_fast_and_skips_what_went_by() -> None:
    session = load_session(synthetic_session_path())
    speed = 100

    async def slice_20s() -> tuple[ListSink, ReplayHeartSource, float]:
        clock = ScaledClock(origin=session.origin + 100, speed=speed)
        sink = ListSink(clock)
        source = ReplayHeartSource(session, clock, origin=session.origin)
        started = time.monotonic()
        task = asyncio.create_task(source.run(sink))
        await clock.sleep_until(session.origin + 120)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sink, source, time.monotonic() - started

    sink, source, elapsed = asyncio.run(slice_20s())
    assert elapsed < 5.0  # 0.2 s nominal
    ts = [e.t - session.origin for e in sink.events]
    assert 100 <= ts[-1] <= 121 and not source.status.finished
    # rows further in the past than the late grace when the replay started are skipped
    grace = max(LATE_GRACE_S, LATE_GRACE_REAL_S * speed)
    rows = session.heart_rows()
    skipped = source.status.extra["skipped"]
    assert sum(r.t < 100 - grace for r in rows) <= skipped <= sum(r.t < 102 - grace for r in rows)
    assert ts[0] >= 100 - grace - 1e-6
    # event times carry the float error of origin + t at UNIX-time magnitude (~1e-7 s)
    assert ts == pytest.approx([r.t for r in rows[skipped : skipped + len(ts)]], abs=1e-5)


def test_a_late_first_run_delivers_every_row_late_rather_than_skipping() -> None:
    """A busy machine may start the replay task long after the clock: nothing is lost."""
    session = load_session(synthetic_session_path())
    clock = JumpClock(session.origin)
    source = ReplayHeartSource(session, clock)
    clock.t += 50  # the task is scheduled 50 session seconds late
    sink = ListSink(clock)
    asyncio.run(source.run(sink))
    assert source.status.extra["skipped"] == 0 and source.status.finished
    assert len(sink.events) == len(session.heart_rows())
    # late rows keep their own event times, in order
    ts = [e.t - session.origin for e in sink.events]
    assert ts == pytest.approx([r.t for r in session.heart_rows()], abs=1e-5)


def test_sources_built_late_on_a_scaled_clock_still_start_at_its_origin() -> None:
    """Building sources (or loading models) after the clock started skips nothing."""
    session = load_session(synthetic_session_path())
    clock = ScaledClock(origin=session.origin, speed=1000)
    time.sleep(0.2)  # 200 session seconds go by before the sources exist: beyond any grace
    sources = replay_sources(session, clock)

    async def run() -> ListSink:
        sink = ListSink(clock)
        await asyncio.gather(*(s.run(sink) for s in sources))
        return sink

    sink = asyncio.run(run())
    assert all(s.status.extra["skipped"] == 0 and s.status.finished for s in sources)
    heart = [e for e in sink.events if isinstance(e, HeartEvent)]
    assert len(heart) == len(session.heart_rows())


def test_restart_after_a_crash_resumes_at_the_clock_time() -> None:
    session = load_session(synthetic_session_path())
    rows = session.heart_rows()
    clock = JumpClock(session.origin + 300)

    class FailingSink(ListSink):
        def put(self, event: Event) -> None:
            if len(self.events) == 5:
                raise RuntimeError("pipeline hiccup")
            super().put(event)

    source = ReplayHeartSource(session, clock)  # a JumpClock has no origin: the session's
    sink = FailingSink(clock)
    with pytest.raises(RuntimeError):
        asyncio.run(source.run(sink))
    before = sum(1 for r in rows if r.t < 299)  # 1 s late grace at speed 1
    assert source.status.extra["skipped"] == before
    assert sink.events[0].t - session.origin >= 299
    assert source.status.events == 5 and not source.status.finished

    failed_at = clock.t - session.origin  # the clock stopped at the row that failed
    clock.t += 60  # down for a minute: those rows are lost, as with a live strap
    back = clock.t
    resumed = ListSink(clock)
    asyncio.run(source.run(resumed))
    assert source.status.finished
    # lost: the row that failed and every row more than 1 s old when the source came back
    lost = sum(1 for r in rows[before + 5 :] if session.origin + r.t < back - 1)
    assert source.status.extra["skipped"] == before + lost
    first = resumed.events[0].t - session.origin
    assert failed_at + 59 <= first <= failed_at + 61
    assert len(sink.events) + len(resumed.events) + before + lost == len(rows)


def test_eda_groups_break_at_gaps_and_skip_counts_samples(tmp_path: Path) -> None:
    eda = "t,microsiemens\n" + "".join(f"{i / 4},{i}\n" for i in range(10) if i not in (6,))
    session = load_session(make_session(tmp_path / "s", **{"eda.csv": eda}))
    clock = JumpClock(session.origin)
    sink = ListSink(clock)
    asyncio.run(ReplayEdaSource(session, clock).run(sink))
    groups = [e.microsiemens for e in sink.events]  # 1.5 s is missing: a group ends before it
    assert groups == [(0.0, 1.0, 2.0, 3.0), (4.0, 5.0), (7.0, 8.0, 9.0)]
    late = JumpClock(session.origin + 2.0)  # the first packet (sent at 0.75 s) is > 1 s old
    source = ReplayEdaSource(session, late)
    asyncio.run(source.run(ListSink(late)))
    assert source.status.extra["skipped"] == 4 and source.status.events == 2


def test_camera_replay_decodes_frames_when_played(tmp_path: Path) -> None:
    session = load_session(make_session(tmp_path / "s"))
    clock = JumpClock(session.origin)
    sink = ListSink(clock)
    source = ReplayCameraSource(session, clock)
    (tmp_path / "s" / "frames" / "b.ppm").write_bytes(b"P6 1 1 255\n")  # broken after loading
    asyncio.run(source.run(sink))
    assert [type(e) for e in sink.events] == [FrameEvent]
    assert sink.events[0].image.shape == (12, 16)  # type: ignore[union-attr]
    assert source.status.rejected == 1 and "b.ppm" in str(source.status.extra["last_error"])
    assert source.status.finished


# --- the bundled demo session --------------------------------------------------------------


def test_demo_session_is_deterministic_and_small(tmp_path: Path) -> None:
    shipped = synthetic_session_path()
    generate_synthetic.main([str(tmp_path)])
    names = ["manifest.yaml", "heart.csv", "eda.csv"]
    for name in names:
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name
    assert sum((shipped / n).stat().st_size for n in names) < 100_000
    session = load_session(shipped)
    assert session.synthetic and "SYNTHETIC" in session.description
    assert "CC0" in session.license and session.duration_s == 600


def _rmssd(rows: list[HeartRow]) -> float:
    """RMSSD over successive RR that are really successive beats (no gap between rows)."""
    diffs: list[float] = []
    prev_rr, prev_t = None, None
    for row in rows:
        if not row.contact or (prev_t is not None and row.t - prev_t > 1.5):
            prev_rr = None
        for rr in row.rr_ms:
            if prev_rr is not None:
                diffs.append(rr - prev_rr)
            prev_rr = rr
        prev_t = row.t
    return math.sqrt(sum(d * d for d in diffs) / len(diffs))


def test_demo_heart_and_eda_have_the_stated_properties() -> None:
    session = load_session(synthetic_session_path())
    rows = session.heart_rows()
    rest = [r for r in rows if 30 <= r.t < 240]
    stress = [r for r in rows if 270 <= r.t < 420]

    def mean_hr(part: list[HeartRow]) -> float:
        return float(np.mean([r.hr for r in part if r.contact]))

    assert mean_hr(stress) >= mean_hr(rest) + 15
    assert 60 <= mean_hr(rest) <= 68 and 84 <= mean_hr(stress) <= 92
    assert _rmssd(rest) > 2 * _rmssd(stress)
    assert 30 <= _rmssd(rest) <= 50 and 10 <= _rmssd(stress) <= 20
    assert all(len(r.rr_ms) <= 3 for r in rows)
    # RR are whole 1/1024 s counts, as a BLE strap sends them
    assert all(abs(v * 1.024 - round(v * 1.024)) < 1e-9 for r in rows for v in r.rr_ms)
    lost = [r for r in rows if r.contact is False]
    assert len(lost) == 8 and all(not r.rr_ms for r in lost)
    gaps = [b.t - a.t for a, b in itertools.pairwise(rows)]
    assert sum(1 for g in gaps if g > 1.5) == 2  # two dropped notifications

    eda = np.array([r.microsiemens for r in session.eda_rows()])
    assert len(eda) == 2400
    assert 1.8 < np.median(eda[: 240 * 4]) < 2.4 and 3.6 < np.median(eda[300 * 4 : 420 * 4]) < 4.6


# --- a replay's windows close in order with their rows ----------------------------------


def test_a_replay_window_closes_after_the_rows_due_before_it_and_before_the_rest() -> None:
    """The window's timer fires first (as on a busy machine, where a row's own timer can fire
    just after it): inside `window_closing` every heart row due before the window's end has
    reached the sink and none due after it has, and the held rows follow once it exits."""
    session = load_session(synthetic_session_path())
    due = [r.t for r in session.heart_rows() if r.t < 5.0]
    assert due

    async def scenario() -> tuple[bool, int, list[float], int]:
        clock = ScaledClock(origin=session.origin, speed=200)
        source = ReplayHeartSource(session, clock)
        sink = ListSink(clock)
        end = session.origin + 5.0
        await clock.sleep_until(end + 1.0)  # the window's timer, and a second more
        before = len(sink.events)
        task = asyncio.create_task(source.run(sink))  # the rows' timers: all late
        async with window_closing([source, object()], end) as complete:  # object(): no wait
            await asyncio.sleep(0.05)  # the source keeps running while the window closes
            inside = [e.t for e in sink.events]
        await asyncio.sleep(0.05)  # let the released source run
        after = sum(1 for e in sink.events if e.t >= end)
        task.cancel()
        return complete, before, inside, after

    complete, before, inside, after = asyncio.run(scenario())
    assert complete and before == 0
    assert len(inside) == len(due) and all(t < session.origin + 5.0 for t in inside)
    assert after > 0  # held, not lost


def test_a_replay_window_waits_only_so_long_and_not_for_frames(monkeypatch) -> None:
    import agent.sources.replay as replay

    monkeypatch.setattr(replay, "CATCH_UP_REAL_S", 0.05)
    session = load_session(synthetic_session_path())
    clock = ScaledClock(origin=session.origin, speed=200)
    heart = ReplayHeartSource(session, clock)  # never run: its rows stay due
    assert heart.pending_before(session.origin + 5.0)
    assert not heart.pending_before(session.origin)
    assert not ReplayCameraSource.windowed  # frames are analysed later, on another thread

    async def close() -> bool:
        async with window_closing([heart], session.origin + 5.0) as complete:
            return complete

    started = time.monotonic()
    assert asyncio.run(close()) is False
    assert time.monotonic() - started < 5  # the limit, not the source, ended the wait
    assert heart._hold is None  # released for the rows after the window
