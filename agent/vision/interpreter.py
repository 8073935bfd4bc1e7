"""One small interface over the two TFLite runtimes the agent can run on.

`tflite-runtime` 2.14 is the pinned dependency (its last release, cp311 wheels for x86_64
and aarch64, needs numpy<2). `ai-edge-litert` is its successor and runs int8 models much
faster on x86; it installs beside it. Everything else in the agent sees only `Model`, so
the choice of runtime lives here and nowhere else, and `Model.runtime` says which one runs.

Model files are checked when they load, not when the first frame arrives: the file must
exist, its sha256 must be the one recorded in `models/models.json` (the single source of
truth that `models/MODELS.md` mirrors), and its input tensor must have the recorded shape
and dtype. Any failure is a `ModelError` that names the file and the command that rebuilds
it, because a model that silently differs from the one measured makes the published
numbers mean nothing.

Quantization parameters are read from each tensor's details, never assumed: an int8 model
rebuilt with another calibration set gets another scale and zero point.

Threads: a TFLite Interpreter is not safe for concurrent use, and building one costs
milliseconds plus memory, so build one per worker thread, once, and reuse it for every
frame (`PerThreadModel` does exactly that). `Model.run` refuses concurrent calls instead of
corrupting tensors. `invoke()` releases the GIL, so worker threads do run in parallel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Runtime = Literal["auto", "tflite-runtime", "ai-edge-litert"]
RUNTIMES: tuple[str, ...] = ("ai-edge-litert", "tflite-runtime")
"""Preference order for runtime="auto". ai-edge-litert first: it is opt-in (not a core
dependency), so its presence is a deliberate choice, and it is the faster one."""

MANIFEST_NAME = "models.json"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
"""The repository's models/ folder (a git checkout or an editable install)."""
INSTALLED_MODELS_DIR = Path(sys.prefix) / "share" / "emotion-agent" / "models"
"""Where a wheel install puts them (pyproject's data-files)."""

REBUILD_ALL = "python models/build_models.py all --fer2013 PATH/fer2013_train_public.npz"

_INSTALL_HINT = {
    # tflite-runtime's last release (2.14) has wheels up to Python 3.11 and needs numpy<2
    "tflite-runtime": 'pip install "numpy<2" "tflite-runtime==2.14.0" (Python 3.11 only)',
    "ai-edge-litert": (
        'pip install "numpy<2" ai-edge-litert'
        if sys.version_info < (3, 12)
        else "pip install ai-edge-litert"
    ),
}


def install_hint(runtime: str = "auto") -> str:
    """The command that installs `runtime` (for "auto": the one this Python should use)."""
    if runtime == "auto":
        runtime = "tflite-runtime" if sys.version_info < (3, 12) else "ai-edge-litert"
    return _INSTALL_HINT[runtime]


class ModelError(RuntimeError):
    """A model file is missing, altered, or not the model the agent expects."""

    def __init__(self, path: Path | str, problem: str, rebuild: str = REBUILD_ALL) -> None:
        self.path = Path(path)
        self.problem = problem
        self.rebuild = rebuild
        super().__init__(
            f"model {self.path}: {problem}. Rebuild it with `{rebuild}` "
            f"(provenance and checksums: models/MODELS.md)"
        )


class RuntimeNotAvailable(ModelError):
    """The requested TFLite runtime is not installed (the file itself may be fine)."""


def models_dir() -> Path:
    """Where shipped models live: $EMOTION_AGENT_MODELS_DIR, else the repository's models/,
    else <venv>/share/emotion-agent/models (a non-editable install)."""
    env = os.environ.get("EMOTION_AGENT_MODELS_DIR")
    if env:
        return Path(env)
    if (DEFAULT_MODELS_DIR / MANIFEST_NAME).exists():
        return DEFAULT_MODELS_DIR
    return INSTALLED_MODELS_DIR


@dataclass(frozen=True)
class ModelSpec:
    """What a model file must be: its checksum and its input tensor.

    Any field left None is not checked, so a spec can pin only the input (for a user's
    own model) or only the bytes.
    """

    name: str
    sha256: str | None = None
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    rebuild: str = REBUILD_ALL
    inference: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """How the model's output is read, as measured when it was built (models.json
    "inference"; see INFERENCE_KEYS)."""

    @classmethod
    def from_manifest(cls, name: str, manifest: Path | None = None) -> ModelSpec:
        """The spec recorded for `name` in models.json (KeyError if it is not listed)."""
        manifest = manifest or models_dir() / MANIFEST_NAME
        entry = read_manifest(manifest).get(name)
        if entry is None:
            raise KeyError(f"{name} is not listed in {manifest}")
        return cls._from_entry(entry, manifest)

    @classmethod
    def _from_entry(cls, entry: Mapping[str, Any], manifest: Path) -> ModelSpec:
        inp = entry.get("input", {})
        shape = inp.get("shape")
        rebuild = entry.get("rebuild", REBUILD_ALL)
        return cls(
            name=entry["file"],
            sha256=entry.get("sha256"),
            input_shape=tuple(int(v) for v in shape) if shape is not None else None,
            input_dtype=inp.get("dtype"),
            rebuild=rebuild,
            inference=checked_inference(entry.get("inference", {}), manifest, entry["file"]),
        )


INFERENCE_KEYS = {
    "flip_average": "true or false: average each face with its mirror image",
    "temperature": "a positive number: the calibration temperature without flips",
    "temperature_with_flip": "a positive number: the calibration temperature with flips",
}
"""What a models.json "inference" entry may hold (written by build_models.py calibrate)."""


def checked_inference(value: Any, manifest: Path, name: str) -> dict[str, Any]:
    """A models.json "inference" entry, checked: a ModelError naming the file and key if not."""

    def bad(problem: str) -> ModelError:
        return ModelError(manifest, f'{name}: "inference" {problem}', REBUILD_ALL)

    if not isinstance(value, Mapping):
        raise bad(f"must be an object, got {value!r}")
    for key, v in value.items():
        if key not in INFERENCE_KEYS:
            raise bad(f"has an unknown key {key!r} (known: {', '.join(INFERENCE_KEYS)})")
        if key == "flip_average":
            ok = isinstance(v, bool)
        else:
            ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf")
        if not ok:
            raise bad(f"{key} must be {INFERENCE_KEYS[key]}, got {v!r}")
    return dict(value)


def read_manifest(manifest: Path) -> dict[str, dict[str, Any]]:
    """models.json as {file name: entry}; an absent manifest is an empty one."""
    try:
        data = json.loads(Path(manifest).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelError(manifest, f"cannot read the model manifest ({exc})") from exc
    return {m["file"]: m for m in data.get("models", [])}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (models are small, but configs may point anywhere)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorDetail:
    """A runtime-neutral copy of one input or output tensor's details.

    `scale == 0` means the tensor is not quantized (float, or a raw integer tensor).
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int
    per_axis: bool = False

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"

    @classmethod
    def from_details(cls, d: Mapping[str, Any]) -> TensorDetail:
        """Build from the dict that `get_input_details()`/`get_output_details()` return."""
        scale, zero_point = d.get("quantization", (0.0, 0))
        params = d.get("quantization_parameters") or {}
        scales = np.asarray(params.get("scales", []))
        return cls(
            name=str(d.get("name", "")),
            index=int(d["index"]),
            shape=tuple(int(v) for v in d["shape"]),
            dtype=np.dtype(d["dtype"]),
            scale=float(scale),
            zero_point=int(zero_point),
            per_axis=scales.size > 1,
        )


def _as_detail(detail: TensorDetail | Mapping[str, Any]) -> TensorDetail:
    return detail if isinstance(detail, TensorDetail) else TensorDetail.from_details(detail)


def quantize(x: np.ndarray, detail: TensorDetail | Mapping[str, Any]) -> np.ndarray:
    """Real values -> the tensor's dtype, with the tensor's own scale and zero point.

    q = floor(x / scale + 0.5) + zero_point, clipped to the dtype's range. Ties round up, not
    to even: for an image scaled x/255*2-1 into scale 2/255 every grey level sits on a tie,
    and round-half-even would merge pairs of neighbouring levels (measured: 99.3 % vs 99.8 %
    top-1 agreement of the float expression model fed the quantized input on PublicTest).
    Float tensors are cast; integer tensors without quantization (scale 0) take rounded values.
    """
    d = _as_detail(detail)
    if d.per_axis:
        raise ValueError(f"tensor {d.name!r} is quantized per axis; model I/O must be per tensor")
    if d.dtype.kind == "f":
        return np.asarray(x, dtype=d.dtype)
    info = np.iinfo(d.dtype)
    x = np.asarray(x, dtype=np.float32)
    q = np.floor(x / np.float32(d.scale) + 0.5) + d.zero_point if d.scale else np.rint(x)
    return np.clip(q, info.min, info.max).astype(d.dtype)


def dequantize(y: np.ndarray, detail: TensorDetail | Mapping[str, Any]) -> np.ndarray:
    """The tensor's values -> float32 real values: (q - zero_point) * scale."""
    d = _as_detail(detail)
    if d.per_axis:
        raise ValueError(f"tensor {d.name!r} is quantized per axis; model I/O must be per tensor")
    y = np.asarray(y)
    if not d.quantized:
        return y.astype(np.float32, copy=False)
    return (y.astype(np.float32) - np.float32(d.zero_point)) * np.float32(d.scale)


def _import_interpreter(name: str) -> tuple[type, str]:
    """The Interpreter class of one runtime and that runtime's version."""
    if name == "tflite-runtime":
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, getattr(tflite_runtime, "__version__", "?")
    if name == "ai-edge-litert":
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, getattr(ai_edge_litert, "__version__", "?")
    raise ValueError(f"unknown TFLite runtime {name!r}; choose auto, {', '.join(RUNTIMES)}")


def available_runtimes() -> list[str]:
    """The runtimes that import here, in the order runtime="auto" would try them."""
    found = []
    for name in RUNTIMES:
        try:
            _import_interpreter(name)
        except ImportError:
            continue
        found.append(name)
    return found


def _resolve_runtime(path: Path, runtime: str, rebuild: str) -> tuple[type, str, str]:
    names = RUNTIMES if runtime == "auto" else (runtime,)
    errors = []
    for name in names:
        try:
            cls, version = _import_interpreter(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return cls, name, version
    hints = " or ".join(_INSTALL_HINT[n] for n in names)
    raise RuntimeNotAvailable(
        path, f"no TFLite runtime imports ({'; '.join(errors)}); install one: {hints}", rebuild
    )


class Model:
    """A loaded TFLite model: tensor details, quantization, and `run`.

    Built by `load_model`. Use one Model from one thread at a time.
    """

    def __init__(
        self,
        interpreter: Any,
        *,
        path: Path,
        runtime: str,
        runtime_version: str,
        num_threads: int,
        sha256: str,
        inference: Mapping[str, Any] | None = None,
    ) -> None:
        self._interpreter = interpreter
        self.inference: Mapping[str, Any] = dict(inference or {})
        self._lock = threading.Lock()
        self.path = path
        self.runtime = runtime
        self.runtime_version = runtime_version
        self.num_threads = num_threads
        self.sha256 = sha256
        self.inputs = tuple(TensorDetail.from_details(d) for d in interpreter.get_input_details())
        self.outputs = tuple(TensorDetail.from_details(d) for d in interpreter.get_output_details())

    @property
    def input(self) -> TensorDetail:
        """The first (for our models: only) input tensor."""
        return self.inputs[0]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Set each input (already in the tensor's dtype and shape), invoke, copy out outputs.

        No silent casting: a float array fed to an int8 tensor is a bug (missing
        `quantize`), so it raises instead of producing plausible garbage.
        """
        if len(inputs) != len(self.inputs):
            raise ValueError(
                f"{self.path.name} takes {len(self.inputs)} input(s), got {len(inputs)}"
            )
        for x, d in zip(inputs, self.inputs, strict=True):
            if x.shape != d.shape or x.dtype != d.dtype:
                raise ValueError(
                    f"{self.path.name} input {d.name!r} wants {d.dtype.name}{list(d.shape)}, "
                    f"got {x.dtype.name}{list(x.shape)}"
                )
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(
                f"{self.path.name}: Model.run called concurrently; build one Model per thread "
                "(see PerThreadModel)"
            )
        try:
            for x, d in zip(inputs, self.inputs, strict=True):
                self._interpreter.set_tensor(d.index, x)
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(d.index) for d in self.outputs]
        finally:
            self._lock.release()

    invoke = run

    def describe(self) -> dict[str, Any]:
        """A small summary for logs and health output (no tensor data)."""
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "runtime": f"{self.runtime} {self.runtime_version}",
            "num_threads": self.num_threads,
            "inputs": [(d.name, list(d.shape), d.dtype.name) for d in self.inputs],
            "outputs": [(d.name, list(d.shape), d.dtype.name) for d in self.outputs],
        }

    def __repr__(self) -> str:
        return f"Model({self.path.name!r}, runtime={self.runtime!r}, threads={self.num_threads})"


def load_model(
    path: Path | str,
    *,
    runtime: Runtime | str = "auto",
    num_threads: int = 1,
    expected: ModelSpec | None = None,
) -> Model:
    """Check a model file and build its interpreter, once.

    `expected=None` uses the entry for this file name in the models.json beside it, if it
    has one; a file that no manifest lists (a user's own model) is loaded unchecked apart
    from existing and loading. Pass a `ModelSpec` to check against it instead.
    """
    path = Path(path)
    if expected is None:
        manifest = path.parent / MANIFEST_NAME
        entry = read_manifest(manifest).get(path.name)
        expected = ModelSpec._from_entry(entry, manifest) if entry else None
    rebuild = expected.rebuild if expected else REBUILD_ALL
    if not path.is_file():
        raise ModelError(path, "file not found", rebuild)
    digest = sha256_of(path)
    if expected and expected.sha256 and digest != expected.sha256.lower():
        raise ModelError(
            path, f"sha256 is {digest}, but {expected.sha256} is recorded for it", rebuild
        )
    if num_threads < 1:
        raise ValueError("num_threads must be >= 1")
    cls, name, version = _resolve_runtime(path, runtime, rebuild)
    try:
        interpreter = cls(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(path, f"{name} {version} cannot load it ({exc})", rebuild) from exc
    model = Model(
        interpreter,
        path=path,
        runtime=name,
        runtime_version=version,
        num_threads=num_threads,
        sha256=digest,
        inference=expected.inference if expected else None,
    )
    if expected:
        _check_input(model, expected, rebuild)
    log.info("loaded %s with %s %s (%d thread(s))", path.name, name, version, num_threads)
    return model


def _check_input(model: Model, spec: ModelSpec, rebuild: str) -> None:
    d = model.input
    if spec.input_shape is not None and d.shape != tuple(spec.input_shape):
        raise ModelError(
            model.path,
            f"input shape is {list(d.shape)}, expected {list(spec.input_shape)}",
            rebuild,
        )
    if spec.input_dtype is not None and d.dtype != np.dtype(spec.input_dtype):
        raise ModelError(
            model.path, f"input dtype is {d.dtype.name}, expected {spec.input_dtype}", rebuild
        )


class PerThreadModel:
    """One `Model` per thread, built on that thread's first `get()` and reused after.

    Give it to a ThreadPoolExecutor's workers: each worker gets its own interpreter and
    never rebuilds it per frame. `eager=True` loads once in the constructing thread so a
    bad file fails at startup (before systemd hears READY=1), not on the first frame.
    """

    def __init__(self, path: Path | str, *, eager: bool = True, **load_kwargs: Any) -> None:
        self.path = Path(path)
        self._load_kwargs = load_kwargs
        self._local = threading.local()
        self._count = 0
        self._count_lock = threading.Lock()
        if eager:
            self.get()

    def get(self) -> Model:
        """This thread's Model, built the first time this thread asks."""
        model = getattr(self._local, "model", None)
        if model is None:
            model = load_model(self.path, **self._load_kwargs)
            self._local.model = model
            with self._count_lock:
                self._count += 1
        return model

    @property
    def built(self) -> int:
        """How many interpreters were built so far (one per thread that asked)."""
        return self._count
