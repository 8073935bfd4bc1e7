"""emotion-agent evaluate-stress: does the published `stress` separate stress from rest?

    emotion-agent evaluate-stress DIR --negative PHASE --positive PHASE [--positive PHASE]...
                                  [-c CONFIG] [--json]

DIR holds one folder per subject in the Stress-Predict layout (agent.sessions.stress_predict:
``segments.csv``, ``ibi.csv``, ``eda_4hz.csv``, ``hr_e4_1hz.csv`` when present). Each
subject's recording, from the start of its first ``--negative`` phase to its end (so the
personal baseline calibrates at rest), is played by the agent's own replay sources into
the agent's own window aggregator, personal baseline and fusion, built from the
configuration as the running agent builds them (`agent.runtime.window_aggregator`), on a
simulated clock that jumps from one event to the next: as fast as the machine allows, and
the same states as a live replay (tests/test_stress_eval.py checks that).

Scoring. A window is labelled by the span its physiology was computed from, ``[end - L,
end]`` with L the longest of the state, HRV and EDA windows: 0 when that span lies inside
a negative phase, 1 inside a positive one; a window straddling two phases is not scored,
and one inside a phase neither option names is scored apart, only under ``phases``.
Windows that end within ``baseline.calibration_s``
of the start are not scored (they form the baseline). A labelled window whose state is not
``ok`` has no stress; it counts against ``share_ok`` and is left out of the rest.

Output: per subject the windows per class, ``share_ok``, the AUROC of stress and of
arousal (Mann-Whitney, ties counted half), balanced accuracy at stress >= 0.5 and the mean
stress per phase; then over subjects ``median_auroc`` and its interquartile range
``auroc_iqr``, ``pooled_auroc`` (every subject's windows together), and
``balanced_accuracy``, ``sensitivity`` and ``specificity`` at stress >= 0.5 pooled over
subjects; ``phases`` repeats these for each phase of segments.csv that is not negative
(each against all negative windows). Subjects that cannot be evaluated (a missing or
malformed file, no negative phase, no EDA, no window of one class) are listed under
``subjects`` with ``skipped`` and the reason, never a traceback. A phase name that no
subject's segments.csv has is refused before anything is replayed (exit 2, with the names
there are), and a run in which no subject could be evaluated exits 1. With one signal in
the stress model and no face, stress and arousal rank windows alike: their AUROCs match.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import sys
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.affect.windows import WindowState
from agent.config import AgentConfig
from agent.sessions.stress_predict import (
    Recording,
    SubjectError,
    read_recording,
    read_segments,
    subject_session,
)
from agent.sources.replay import replay_sources
from agent.sources.session import Session

THRESHOLD = 0.5


class SimulatedClock:
    """Discrete-event time: it stands still while any participant is busy and jumps to
    the earliest wake-up once every one of them waits on it (ties wake in the order they
    were asked for). Participants are the coroutines passed through `join`."""

    speed = 1.0  # nominal: what replay sources read to size their lateness grace

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self._now = origin
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._active = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, t: float) -> None:
        if t <= self._now:
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t, self._seq, future))
        self._seq += 1
        self._advance()
        await future

    def _advance(self) -> None:
        if self._sleepers and len(self._sleepers) >= self._active:
            t, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, t)
            future.set_result(None)

    def join(self, coro: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
        """Count `coro` as a participant from now until it returns."""
        self._active += 1

        async def participant() -> None:
            try:
                await coro
            finally:
                self._active -= 1
                self._advance()

        return participant()


def simulate_states(cfg: AgentConfig, session: Session) -> list[WindowState]:
    """Every window state the agent makes of `session`, on a simulated clock."""
    from agent.runtime import window_aggregator

    aggregator = window_aggregator(cfg, None)
    clock = SimulatedClock(session.origin)
    sources = replay_sources(session, clock)
    step = cfg.windows.state_s
    states: list[WindowState] = []

    async def windows() -> None:
        start, until = session.origin, session.origin + session.duration_s
        while start + step <= until + 1e-6:  # the agent's replay schedule (Agent._windows)
            await clock.sleep_until(start + step)
            states.append(aggregator.close(start, start + step))
            start += step

    async def main() -> None:
        await asyncio.gather(*(clock.join(s.run(aggregator)) for s in sources),
                             clock.join(windows()))  # fmt: skip

    asyncio.run(main())
    return states


# -- scoring ------------------------------------------------------------------------------
def auroc(negatives: Sequence[float], positives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties half: the Mann-Whitney U / (n0 n1)."""
    if not negatives or not positives:
        return None
    values = np.concatenate([np.asarray(negatives, float), np.asarray(positives, float)])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(1, values.size + 1)
    for v in np.unique(values):  # average ranks over ties
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    n0, n1 = len(negatives), len(positives)
    u = ranks[n0:].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n0 * n1))


def rates(negatives: Sequence[float], positives: Sequence[float]) -> dict[str, float | None]:
    """Sensitivity, specificity and their mean at stress >= THRESHOLD."""
    sens = float(np.mean(np.asarray(positives) >= THRESHOLD)) if positives else None
    spec = float(np.mean(np.asarray(negatives) < THRESHOLD)) if negatives else None
    both = None if sens is None or spec is None else (sens + spec) / 2.0
    return {"balanced_accuracy": both, "sensitivity": sens, "specificity": spec}


@dataclass(frozen=True)
class Scored:
    end: float  # seconds from the start of the evaluated stretch
    label: int  # 0 negative, 1 positive, -1 a phase neither option names
    phase: str
    stress: float | None
    arousal: float | None
    z: dict[str, float]  # the baseline z-scores fusion saw (for fitting, agent.bench.stress_fit)


def _phase_of(rec: Recording, a: float, b: float) -> str | None:
    for name, start, end in rec.segments:
        if start - 1e-6 <= a and b <= end + 1e-6:
            return name
    return None


def score_subject(
    rec: Recording, cfg: AgentConfig, negative: Sequence[str], positive: Sequence[str]
) -> tuple[dict[str, Any], list[Scored]]:
    """The subject's report and its scored windows; SubjectError when it cannot be."""
    negatives = [p for p in rec.segments if p[0] in negative]
    if not negatives:
        raise SubjectError(f"no {' or '.join(negative)} phase in segments.csv")
    start = min(a for _, a, _ in negatives)
    stop = max(b for _, _, b in rec.segments)
    session = subject_session(rec, start, stop)
    states = simulate_states(cfg, session)
    w = cfg.windows
    span = max(w.state_s, w.hrv_window_s, w.eda_window_s)
    scored: list[Scored] = []
    by_phase: dict[str, list[float]] = {}
    for st in states:
        a, b = st.end - span - session.origin + start, st.end - session.origin + start
        phase = _phase_of(rec, a, b)
        fused = st.fused if st.status == "ok" else None
        stress = fused.stress if fused is not None else None
        arousal = fused.arousal if fused is not None else None
        if phase is not None and stress is not None:
            by_phase.setdefault(phase, []).append(stress)
        if b - start < cfg.baseline.calibration_s - 1e-6 or phase is None:
            continue
        # a phase neither option names is scored apart (under `phases`), never in the totals
        label = 0 if phase in negative else 1 if phase in positive else -1
        scored.append(Scored(b - start, label, phase, stress, arousal, st.zscores))
    counted = [s for s in scored if s.label >= 0]
    n0 = sum(s.label == 0 for s in counted)
    n1 = sum(s.label == 1 for s in counted)
    if not n0 or not n1:
        which = "negative" if not n0 else "positive"
        raise SubjectError(
            f"no scored {which} window (the replay starts at {start:g} s, the first negative "
            f"phase; a window counts when its last {span:g} s lie inside one phase)"
        )
    ok = [s for s in counted if s.stress is not None]
    neg = [s.stress for s in ok if s.label == 0]
    pos = [s.stress for s in ok if s.label == 1]
    report = {
        "subject": rec.name,
        "windows": {"negative": n0, "positive": n1},
        "share_ok": round(len(ok) / len(counted), 4),
        "auroc": _r(auroc(neg, pos)),
        "auroc_arousal": _r(
            auroc([s.arousal for s in ok if s.label == 0], [s.arousal for s in ok if s.label == 1])
        ),
        **{k: _r(v) for k, v in rates(neg, pos).items()},
        "mean_stress": {p: _r(float(np.mean(v))) for p, v in by_phase.items()},
    }
    return report, scored


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def across_subjects(
    per_subject: Iterable[tuple[Sequence[float], Sequence[float]]],
) -> dict[str, Any]:
    """(negative scores, positive scores) of each subject -> `subjects` (those with both),
    the median and IQR of their AUROCs, the pooled AUROC and the rates at THRESHOLD over
    every window: the one summary evaluate-stress and agent.bench.stress_fit report."""
    aucs: list[float] = []
    pooled_neg: list[float] = []
    pooled_pos: list[float] = []
    for neg, pos in per_subject:
        if neg and pos:
            aucs.append(auroc(neg, pos))  # type: ignore[arg-type]
        pooled_neg += neg
        pooled_pos += pos
    q = np.percentile(aucs, [25, 50, 75]) if aucs else [None] * 3
    return {
        "subjects": len(aucs),
        "median_auroc": _r(q[1]),
        "auroc_iqr": [_r(q[0]), _r(q[2])],
        "pooled_auroc": _r(auroc(pooled_neg, pooled_pos)),
        **{k: _r(v) for k, v in rates(pooled_neg, pooled_pos).items()},
    }


def _summary(per_subject: list[list[Scored]], positive: set[str] | None) -> dict[str, Any]:
    """`across_subjects` of the published stress; `positive` restricts the positive windows
    to those phases (None: every window labelled 1)."""
    return across_subjects(
        (
            [s.stress for s in scored if s.label == 0 and s.stress is not None],
            [
                s.stress
                for s in scored
                if s.stress is not None
                and (s.label == 1 if positive is None else s.phase in positive and s.label != 0)
            ],
        )
        for scored in per_subject
    )


def evaluate(
    root: Path, cfg: AgentConfig, negative: Sequence[str], positive: Sequence[str]
) -> dict[str, Any]:
    folders = subject_folders(root)
    subjects: list[dict[str, Any]] = []
    kept: list[list[Scored]] = []
    phases: list[str] = []
    for folder in folders:
        try:
            rec = read_recording(folder)
            report, scored = score_subject(rec, cfg, negative, positive)
        except SubjectError as exc:
            subjects.append({"subject": folder.name, "skipped": str(exc)})
            continue
        subjects.append(report)
        kept.append(scored)
        phases += [p for p, _, _ in rec.segments if p not in phases and p not in negative]
    total = _summary(kept, None)
    total.pop("subjects")
    return {
        "subjects": subjects,
        **total,
        "phases": {p: _summary(kept, {p}) for p in phases},
    }


def format_report(r: dict[str, Any], negative: Sequence[str], positive: Sequence[str]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines = [
        f"stress: {' + '.join(positive)} (1) against {' + '.join(negative)} (0), "
        f"threshold {THRESHOLD}",
        "",
        f"{'subject':<10}{'neg':>5}{'pos':>5}{'ok':>6}{'AUROC':>7}{'arousal':>9}{'bal.acc':>9}",
    ]
    for s in r["subjects"]:
        if "skipped" in s:
            lines.append(f"{s['subject']:<10}skipped: {s['skipped']}")
            continue
        lines.append(
            f"{s['subject']:<10}{s['windows']['negative']:>5}{s['windows']['positive']:>5}"
            f"{s['share_ok']:>6.2f}{f(s['auroc']):>7}{f(s['auroc_arousal']):>9}"
            f"{f(s['balanced_accuracy']):>9}"
        )
    iqr = r["auroc_iqr"]
    spread = "-" if iqr[0] is None else f"{f(iqr[0])}-{f(iqr[1])}"
    lines += [
        "",
        f"median AUROC {f(r['median_auroc'])} (IQR {spread}), "
        f"pooled {f(r['pooled_auroc'])}; balanced accuracy {f(r['balanced_accuracy'])} "
        f"(sensitivity {f(r['sensitivity'])}, specificity {f(r['specificity'])})",
        "",
        "by phase, against the negative windows:",
    ]
    for name, p in r["phases"].items():
        lines.append(
            f"  {name:<38} median AUROC {f(p['median_auroc'])}, pooled {f(p['pooled_auroc'])}, "
            f"sensitivity {f(p['sensitivity'])} ({p['subjects']} subjects)"
        )
    return "\n".join(lines)


def command_parser(prog: str = "emotion-agent evaluate-stress") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Replay labelled recordings through the agent and score its stress.",
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="one folder per subject")
    p.add_argument(
        "--negative",
        action="append",
        required=True,
        metavar="PHASE",
        help="a `phase` of segments.csv that is rest (repeatable); the replay starts at the first",
    )
    p.add_argument(
        "--positive",
        action="append",
        required=True,
        metavar="PHASE",
        help="a `phase` of segments.csv that is stress (repeatable)",
    )
    p.add_argument("-c", "--config", type=Path, help="agent configuration (default: built-in)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    args = command_parser().parse_args(argv)
    if not args.dir.is_dir():
        print(f"evaluate-stress: no such folder {args.dir}", file=sys.stderr)
        return 2
    both = set(args.negative) & set(args.positive)
    if both:
        print(f"evaluate-stress: {', '.join(both)} is both negative and positive", file=sys.stderr)
        return 2
    known = phase_names(args.dir)
    unknown = [p for p in (*args.negative, *args.positive) if p not in known]
    if unknown:
        names = ", ".join(sorted(known)) or "none: no subject folder with a segments.csv"
        print(
            f"evaluate-stress: no subject has a phase {', '.join(unknown)} (phases: {names})",
            file=sys.stderr,
        )
        return 2
    if args.config is not None:
        from agent.config_loader import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"evaluate-stress: {exc}", file=sys.stderr)
            return 2
    else:
        cfg = AgentConfig()
    report = evaluate(args.dir, cfg, args.negative, args.positive)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report, args.negative, args.positive))
    if report["median_auroc"] is None:
        print("evaluate-stress: no subject could be evaluated", file=sys.stderr)
        return 1
    return 0


def phase_names(root: Path) -> set[str]:
    """Every phase named in the subjects' segments.csv files, read alone (unreadable ones
    are skipped here and reported per subject later)."""
    names: set[str] = set()
    for folder in subject_folders(root):
        try:
            names.update(p for p, _, _ in read_segments(folder))
        except SubjectError:
            continue
    return names


def subject_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


if __name__ == "__main__":
    raise SystemExit(main())
