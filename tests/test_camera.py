"""The camera source against the picamera2 stand-in (real picamera2 needs a Pi and libcamera).

The stand-in serves a real photograph and enforces picamera2's quirks, so these tests
catch the mistakes a mock would happily accept: a lores stream that Pi 4 refuses, the
stride-padded YUV420 buffer, B,G,R order, leaked buffers, a camera left open on restart.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError

from agent.events import Event, FrameEvent
from agent.sources.camera import PiCameraSource, camera_source
from agent.sources.camera_capture import CameraError, RateGate
from agent.sources.camera_config import CameraSourceConfig
from agent.supervisor import Supervisor
from tests import picamera2_standin as standin

pytest.importorskip("skimage", reason="scikit-image provides the stand-in's photo")


class ListSink:
    """Collects events with the wall time they were put; `delay` blocks the loop per put,
    as a consumer doing heavy work on the loop would."""

    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[tuple[float, Event]] = []
        self.delay = delay
        self.first: asyncio.Event | None = None

    def put(self, event: Event) -> None:
        self.events.append((time.time(), event))
        if self.first is not None:
            self.first.set()
        if self.delay:
            time.sleep(self.delay)


def config(**kw) -> CameraSourceConfig:
    base = {"lores_size": (128, 96), "frame_rate": 30.0, "analysis_fps": 10.0}
    return CameraSourceConfig(**(base | kw))


def run_for(source, sink, seconds: float) -> None:
    """Run the source on a fresh event loop until `seconds` after its first event (opening
    the camera is not timed), then cancel it as a shutdown does."""

    async def body() -> None:
        sink.first = asyncio.Event()
        task = asyncio.create_task(source.run(sink))
        first = asyncio.create_task(sink.first.wait())
        await asyncio.wait({task, first}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
        first.cancel()
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(body())


def run_once(source, sink) -> None:
    asyncio.run(source.run(sink))


@pytest.fixture
def pi4(monkeypatch) -> standin.StandinState:
    return standin.install(monkeypatch, "vc4")


@pytest.fixture
def pi5(monkeypatch) -> standin.StandinState:
    return standin.install(monkeypatch, "pisp")


# --- the stand-in keeps picamera2's rules -------------------------------------------------


def test_standin_enforces_picamera2_quirks(pi4):
    from picamera2 import Picamera2

    cam = Picamera2()
    with pytest.raises(RuntimeError, match="busy"):
        Picamera2()
    bad = [
        {"main": {"size": (640, 480)}, "lores": {"size": (127, 96)}},  # odd
        {"main": {"size": (320, 240)}, "lores": {"size": (640, 480)}},  # lores > main
        {"main": {"size": (640, 480)}, "lores": {"size": (128, 96), "format": "RGB888"}},
    ]
    for kw in bad:
        with pytest.raises(RuntimeError):
            cam.configure(cam.create_video_configuration(**kw))
    cam.configure(cam.create_video_configuration(lores={"size": (160, 120)}, buffer_count=3))
    cam.start()
    request = cam.capture_request()
    yuv = request.make_array("lores")
    assert yuv.shape == (120 * 3 // 2, 192)  # stride padded to 64 bytes
    assert isinstance(request.get_metadata()["SensorTimestamp"], int)
    cam.capture_request()
    with pytest.raises(RuntimeError, match="release"):
        cam.capture_request()  # two of three buffers held: the camera would stall
    request.release()
    with pytest.raises(RuntimeError, match="after release"):
        request.make_array("lores")
    cam.close()


def test_standin_rgb888_is_bgr_in_memory(pi5):
    from picamera2 import Picamera2

    with Picamera2() as cam:
        cam.configure(cam.create_video_configuration(lores={"size": (128, 96), "format": "RGB888"}))
        cam.start()
        bgr = cam.capture_array("lores")
    assert np.array_equal(bgr[..., ::-1], standin.scene_rgb((128, 96)))


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lores_size": (127, 96)}, "even"),
        ({"lores_size": (800, 600)}, "exceed"),
        ({"lores_size": (128, 128)}, "aspect"),
        ({"analysis_fps": 40.0}, "exceeds frame_rate"),
        ({"zoom": 2}, "Extra inputs"),
    ],
)
def test_config_rejects_what_the_camera_would(kw, message):
    with pytest.raises(ValidationError, match=message):
        config(**kw)


def test_config_documents_every_field():
    schema = CameraSourceConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop.get("title") and prop.get("description"), name


def test_rate_gate_on_sensor_times():
    frames = np.arange(0, 3.0, 1 / 15)  # 15 fps camera, 3 s
    gate = RateGate(4.0, 1 / 15)
    due = [t for t in frames if gate.due(t)]
    assert len(due) == 12  # 4 fps exactly on average, though 15/4 is not whole
    assert max(np.diff(due)) < 0.25 + 1 / 15
    gate = RateGate(5.0, 1 / 15)
    assert [gate.due(t) for t in (10.0, 10.2, 13.0, 13.1, 13.2)] == [1, 1, 1, 0, 1]


# --- the source -----------------------------------------------------------------------------


def test_pi4_emits_y_plane_frames_timed_by_sensor(pi4):
    source = PiCameraSource(config())
    sink = ListSink()
    run_for(source, sink, 0.6)
    assert len(sink.events) >= 4
    expected = standin.yuv420_planes(standin.scene_rgb((128, 96)), 128)[:96]
    walls = [wall for _, wall in pi4.frames]
    for put_at, event in sink.events:
        assert isinstance(event, FrameEvent) and event.source == "camera"
        assert event.image.shape == (96, 128) and event.image.dtype == np.uint8
        assert np.array_equal(event.image, expected)
        assert min(abs(event.t - w) for w in walls) < 0.005  # the exposure's wall time
        assert event.t < put_at
    times = [e.t for _, e in sink.events]
    assert np.all(np.diff(times) > 0)
    assert source.status.extra["format"] == "YUV420"
    assert not pi4.open_cameras  # closed on cancel


def test_pi5_emits_rgb_in_rgb_order(pi5):
    source = camera_source(config(lores_size=(256, 192), main_size=(640, 480)))
    sink = ListSink()
    run_for(source, sink, 0.4)
    assert sink.events
    image = sink.events[0][1].image
    assert image.shape == (192, 256, 3) and image.flags.c_contiguous
    assert np.array_equal(image, standin.scene_rgb((256, 192)))
    assert source.status.extra["format"] == "RGB888"


def test_event_time_is_on_the_agents_clock(pi4):
    class AheadClock:
        speed = 1.0

        def now(self) -> float:
            return time.time() + 1000.0

    sink = ListSink()
    run_for(PiCameraSource(config(), clock=AheadClock()), sink, 0.3)
    assert sink.events
    walls = [wall for _, wall in pi4.frames]
    _, event = sink.events[0]
    assert min(abs(event.t - 1000.0 - w) for w in walls) < 0.005


def test_analysis_rate_is_honoured(pi4):
    source = PiCameraSource(config(frame_rate=30.0, analysis_fps=10.0))
    sink = ListSink()
    run_for(source, sink, 1.0)
    times = [event.t for _, event in sink.events]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 9.0 <= rate <= 11.0
    assert 2.5 <= source.status.extra["frames"] / len(times) <= 3.5  # 30 fps seen, 10 used
    assert source.status.extra["dropped"] == 0


def test_slow_consumer_drops_frames_and_counts_them(pi4):
    source = PiCameraSource(config(frame_rate=30.0, analysis_fps=30.0))
    sink = ListSink(delay=0.1)  # blocks the loop: frames pile up behind it
    run_for(source, sink, 0.8)
    dropped = source.status.extra["dropped"]
    assert dropped >= 8
    assert len(sink.events) + dropped <= source.status.extra["frames"]
    # the newest frame won: events are ~0.1 s apart, not a backlog of old frames
    assert sink.events[-1][0] - sink.events[-1][1].t < 0.15


def test_busy_consumer_declines_frames(pi4):
    answers = iter([True, False, False] * 100)
    source = PiCameraSource(config(analysis_fps=30.0), ready=lambda: next(answers))
    sink = ListSink()
    run_for(source, sink, 0.5)
    assert source.status.extra["dropped"] >= 2 * len(sink.events) - 2
    assert source.status.events == len(sink.events)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.faults
@pytest.mark.parametrize("fault", ["capture_error_after", "hang_after"])
def test_supervisor_restarts_a_failed_camera(pi4, fault):
    setattr(pi4.faults, fault, 3)
    source = PiCameraSource(config(frame_timeout_s=0.3))
    sink = ListSink()
    supervisor = Supervisor(initial_s=0.05, max_s=0.1)

    async def body() -> None:
        supervisor.start(source.name, lambda: source.run(sink))
        try:
            await wait_until(lambda: pi4.instances == 2 and source.status.events >= 4)
        finally:
            await supervisor.stop()

    asyncio.run(body())
    state = supervisor.states["camera"]
    assert state.failures == 1 and state.restarts == 1
    assert ("timed out" if fault == "capture_error_after" else "no frame") in state.last_error
    assert not pi4.open_cameras


async def _cancel_while_opening(pi4) -> None:
    """Run a camera whose start() takes 0.3 s and cancel it inside start()."""
    pi4.faults.start_delay_s = 0.3
    task = asyncio.create_task(PiCameraSource(config()).run(ListSink()))
    await asyncio.sleep(0.1)  # inside start()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_cancelled_while_opening_still_closes_the_camera(pi4):
    async def body() -> None:
        await _cancel_while_opening(pi4)
        await wait_until(lambda: pi4.instances == 1 and not pi4.open_cameras, timeout=2.0)

    asyncio.run(body())


def test_a_camera_cancelled_while_opening_is_closed_before_the_loop_ends(pi4):
    # a shutdown that cancels the camera mid-open and returns at once: the camera must be
    # closed by then, not by a thread that outlives the loop
    asyncio.run(_cancel_while_opening(pi4))
    assert pi4.instances == 1 and not pi4.open_cameras


class _JobWatcher(ThreadPoolExecutor):
    """A default executor that tells when its first job has returned."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.first_done = threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        def job():
            try:
                return fn(*args, **kwargs)
            finally:
                self.first_done.set()

        return super().submit(job)


def test_a_camera_opened_just_as_it_is_cancelled_is_closed_before_the_loop_ends(pi4):
    # the open finishes and hands the camera back, then the cancellation arrives before the
    # task resumes: the close must still be done when asyncio.run returns, even a slow one
    source = PiCameraSource(config())
    close_camera = source._close

    def slow_close(handle: object) -> None:
        time.sleep(0.3)  # a real camera takes a moment to let go
        close_camera(handle)

    source._close = slow_close
    jobs = _JobWatcher()

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(jobs)
        task = asyncio.create_task(source.run(ListSink()))
        await wait_until(lambda: pi4.instances == 1)  # the open job is running
        # block the loop until the open job has returned the camera: it waits unread
        assert jobs.first_done.wait(10)  # blocking on purpose
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(body())
    assert pi4.instances == 1 and not pi4.open_cameras


@pytest.mark.faults
def test_dropped_count_survives_a_restart(pi4):
    pi4.faults.capture_error_after = 10
    source = PiCameraSource(config(analysis_fps=30.0), ready=lambda: False)
    supervisor = Supervisor(initial_s=0.05, max_s=0.1)

    async def body() -> None:
        supervisor.start(source.name, lambda: source.run(ListSink()))
        try:
            await wait_until(lambda: pi4.instances == 2)
            before = source.status.extra["dropped"]
            await wait_until(lambda: source.status.extra["dropped"] > before)
        finally:
            await supervisor.stop()

    asyncio.run(body())
    assert source.status.extra["dropped"] >= 10 and source.status.events == 0


def test_missing_camera_and_wrong_format_are_clear_errors(monkeypatch):
    standin.install(monkeypatch, "vc4", cameras=0)
    with pytest.raises(CameraError, match="rpicam-hello"):
        run_once(PiCameraSource(config()), ListSink())
    state = standin.install(monkeypatch, "vc4")
    with pytest.raises(CameraError, match="Pi 5"):
        run_once(PiCameraSource(config(lores_format="RGB888")), ListSink())
    assert not state.open_cameras


def test_picamera2_absent_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off a Pi
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        run_once(PiCameraSource(config()), ListSink())


def test_usb_without_opencv_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(CameraError, match="OpenCV"):
        run_once(camera_source(config(kind="usb")), ListSink())


@pytest.mark.pi
def test_real_pi_camera_delivers_frames():
    """On a Pi with a camera: `pytest -m pi`. Elsewhere picamera2 does not import: skipped."""
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pytest.skip("picamera2 is not importable (not a Raspberry Pi)")
    source = PiCameraSource(config(frame_rate=15.0, analysis_fps=5.0))
    sink = ListSink()
    run_for(source, sink, 2.0)
    assert len(sink.events) >= 5
    image = sink.events[-1][1].image
    assert image.shape[:2] == (96, 128) and image.std() > 1  # a picture, not a blank buffer
    assert abs(sink.events[-1][1].t - time.time()) < 1.0
