"""A picture of a run: valence, arousal, stress, the emotion and the modalities over time.

`plot_timeline` takes the published state payloads (`<prefix>/state`, in order) and draws
four panels sharing one time axis (elapsed time from the first window):

1. valence and arousal in [-1, 1], with the confidence shaded behind them (right axis);
2. stress in [0, 1];
3. the discrete emotion of each window as a coloured span; windows without numbers are
   labelled by their status (calibrating, insufficient data) and hatched;
4. which modalities (face, heart, eda) each window used.

Null values leave gaps. Only the keys of the published contract are read; any other key
is ignored. matplotlib is an optional extra (`pip install 'emotion-agent[plot]'`): it is
imported only here, with the Agg renderer and no pyplot, so nothing needs a display and
no global state is touched. The output is deterministic: a fixed size (1200 x 840 px),
matplotlib's default style whatever the user's matplotlibrc says, and no version string
in the PNG metadata. Colours are the Okabe-Ito palette (safe for colour-blind readers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.clock import from_iso

MISSING = "plotting needs the optional extra: pip install 'emotion-agent[plot]'"

# Okabe & Ito (2008), "Color Universal Design"
OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
    "black": "#000000",
}
EMOTION_COLOURS = {
    "angry": OKABE_ITO["vermillion"],
    "disgust": OKABE_ITO["bluish_green"],
    "fear": OKABE_ITO["reddish_purple"],
    "happy": OKABE_ITO["yellow"],
    "sad": OKABE_ITO["blue"],
    "surprise": OKABE_ITO["orange"],
    "neutral": OKABE_ITO["grey"],
}
MODALITY_COLOURS = {
    "face": OKABE_ITO["sky_blue"],
    "heart": OKABE_ITO["vermillion"],
    "eda": OKABE_ITO["bluish_green"],
}
VALENCE_COLOUR = OKABE_ITO["blue"]
AROUSAL_COLOUR = OKABE_ITO["orange"]
STRESS_COLOUR = OKABE_ITO["vermillion"]
CONFIDENCE_COLOUR = "#BBBBBB"
# windows without an emotion: (face colour, hatch, legend label)
STATUS_STYLE = {
    "insufficient_data": ("#DDDDDD", "///", "insufficient data"),
    "calibrating": ("#F2F2F2", "...", "calibrating"),
    None: ("#FFFFFF", "", "no emotion (no face)"),
}
OTHER_STATUS = ("#E8E8E8", "xx", None)  # a status this version does not know: its own name

FIGSIZE = (12.0, 8.4)  # inches
DPI = 100  # -> 1200 x 840 pixels
NICE_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class PlotUnavailable(ImportError):
    """matplotlib is not installed: the message says how to install the extra."""


def require_matplotlib() -> None:
    """Raise `PlotUnavailable` (with `MISSING` as its message) unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(MISSING) from exc


@dataclass(frozen=True)
class _Window:
    start: float  # seconds from the first window's start
    end: float
    status: str | None
    valence: float | None
    arousal: float | None
    stress: float | None
    emotion: str | None
    confidence: float | None
    modalities: frozenset[str]


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return from_iso(text)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _bounds(state: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    window = state.get("window")
    window = window if isinstance(window, Mapping) else {}
    start, end = _time(window.get("start")), _time(window.get("end"))
    seconds = _number(window.get("seconds"))
    end = end or _time(state.get("ts"))
    if start is None and end is not None and seconds is not None:
        start = datetime.fromtimestamp(end.timestamp() - seconds, UTC)
    if end is None and start is not None and seconds is not None:
        end = datetime.fromtimestamp(start.timestamp() + seconds, UTC)
    if start is None or end is None or end <= start:
        return None
    return start, end


def _windows(states: Sequence[Mapping[str, Any]]) -> tuple[datetime, list[_Window]]:
    timed = [(b, s) for s in states if (b := _bounds(s)) is not None]
    if not timed:
        raise ValueError("no state with a readable window (window.start/end) to plot")
    origin = min(b[0] for b, _ in timed)
    out = []
    for (start, end), s in timed:
        emotion = s.get("emotion")
        modalities = s.get("modalities")
        out.append(
            _Window(
                start=(start - origin).total_seconds(),
                end=(end - origin).total_seconds(),
                status=s.get("status") if isinstance(s.get("status"), str) else None,
                valence=_number(s.get("valence")),
                arousal=_number(s.get("arousal")),
                stress=_number(s.get("stress")),
                emotion=emotion if isinstance(emotion, str) else None,
                confidence=_number(s.get("confidence")),
                modalities=frozenset(m for m in modalities or () if isinstance(m, str))
                if isinstance(modalities, list | tuple)
                else frozenset(),
            )
        )
    out.sort(key=lambda w: w.start)
    return origin, out


def _series(
    windows: list[_Window], value: Callable[[_Window], float | None]
) -> tuple[list[float], list[float]]:
    """Points at window middles; NaN for nulls and between windows that do not touch."""
    xs: list[float] = []
    ys: list[float] = []
    for i, w in enumerate(windows):
        if i and w.start - windows[i - 1].end > 1e-3:
            xs.append((w.start + windows[i - 1].end) / 2)
            ys.append(math.nan)
        v = value(w)
        xs.append((w.start + w.end) / 2)
        ys.append(math.nan if v is None else v)
    return xs, ys


def _runs(windows: list[_Window], key: Callable[[_Window], Any]) -> dict[Any, list[tuple]]:
    """Contiguous windows with the same key merged: {key: [(start, width), ...]}."""
    spans: dict[Any, list[tuple[float, float]]] = {}
    current: tuple[Any, float, float] | None = None
    for w in windows:
        k = key(w)
        if current and current[0] == k and abs(w.start - current[2]) < 1e-3:
            current = (k, current[1], w.end)
            continue
        if current:
            spans.setdefault(current[0], []).append((current[1], current[2] - current[1]))
        current = (k, w.start, w.end)
    if current:
        spans.setdefault(current[0], []).append((current[1], current[2] - current[1]))
    return spans


def _clock(seconds: float, long: bool) -> str:
    sign = "-" if seconds < 0 else ""
    s = round(abs(seconds))
    if long:
        return f"{sign}{s // 3600}:{s % 3600 // 60:02d}"
    return f"{sign}{s // 60}:{s % 60:02d}"


def _emotion_key(w: _Window) -> tuple[str, str | None]:
    if w.emotion is not None:
        return ("emotion", w.emotion)
    return ("status", None if w.status == "ok" else w.status)


def plot_timeline(
    states: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None
) -> Path:
    """Draw the published state payloads `states` (in order) as a PNG at `path`.

    Raises `PlotUnavailable` without matplotlib, `ValueError` when no state has a
    readable window. Returns the path written.
    """
    require_matplotlib()
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    origin, windows = _windows(states)
    path = Path(path)
    span = max(w.end for w in windows)
    long = span >= 3600
    step = next((s for s in NICE_STEPS if span / s <= 12), NICE_STEPS[-1])
    counts: dict[str, int] = {}
    for w in windows:
        counts[w.status or "unknown"] = counts.get(w.status or "unknown", 0) + 1

    with matplotlib.style.context("default"):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax_va, ax_st, ax_em, ax_mod = fig.subplots(
            4, 1, sharex=True, gridspec_kw={"height_ratios": [3.0, 2.0, 1.1, 1.3]}
        )
        fig.suptitle(
            title or "emotion-agent timeline",
            fontsize=13,
            fontweight="bold",
        )
        summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
        n = f"{len(windows)} window{'s' * (len(windows) != 1)}"
        ax_va.set_title(
            f"{n} from {origin:%Y-%m-%d %H:%M:%S} UTC: {summary}",
            fontsize=9,
            loc="left",
            color="#444444",
        )

        # shade the windows without numbers behind the line panels
        gaps = _runs(windows, lambda w: w.status if w.status != "ok" else None)
        for status, spans in gaps.items():
            if status is None:
                continue
            for ax in (ax_va, ax_st):
                for x, width in spans:
                    ax.axvspan(x, x + width, color="#F0F0F0", zorder=0, lw=0)

        # 1. valence and arousal, confidence behind
        ax_conf = ax_va.twinx()
        edges_x: list[float] = []
        edges_y: list[float] = []
        for w in windows:
            c = math.nan if w.confidence is None else w.confidence
            edges_x += [w.start, w.end]
            edges_y += [c, c]
        ax_conf.fill_between(edges_x, 0, edges_y, color=CONFIDENCE_COLOUR, alpha=0.35, lw=0)
        ax_conf.set_ylim(0, 1)
        ax_conf.set_ylabel("confidence", color="#777777", fontsize=9)
        ax_conf.tick_params(axis="y", colors="#777777", labelsize=8)
        ax_va.set_zorder(ax_conf.get_zorder() + 1)
        ax_va.patch.set_visible(False)
        marker = 4 if len(windows) <= 150 else 2
        for name, colour, get in (
            ("valence", VALENCE_COLOUR, lambda w: w.valence),
            ("arousal", AROUSAL_COLOUR, lambda w: w.arousal),
        ):
            xs, ys = _series(windows, get)
            label = name if any(not math.isnan(y) for y in ys) else f"{name} (none)"
            ax_va.plot(xs, ys, color=colour, lw=1.8, marker="o", ms=marker, label=label)
        ax_va.axhline(0, color="#888888", lw=0.8, zorder=1)
        ax_va.set_ylim(-1.05, 1.05)
        ax_va.set_ylabel("valence / arousal")
        handles, labels = ax_va.get_legend_handles_labels()
        handles.append(Patch(color=CONFIDENCE_COLOUR, alpha=0.35))
        labels.append("confidence (right axis)")
        ax_va.legend(
            handles, labels, loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=9, frameon=False
        )

        # 2. stress
        xs, ys = _series(windows, lambda w: w.stress)
        label = "stress" if any(not math.isnan(y) for y in ys) else "stress (none)"
        ax_st.plot(xs, ys, color=STRESS_COLOUR, lw=1.8, marker="o", ms=marker, label=label)
        ax_st.set_ylim(-0.03, 1.03)
        ax_st.set_ylabel("stress")
        ax_st.legend(loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=9, frameon=False)

        # 3. the emotion per window, or why there is none
        handles, labels = [], []
        runs = _runs(windows, _emotion_key)
        emotions = [e for e in EMOTION_COLOURS if ("emotion", e) in runs]
        emotions += sorted(k[1] for k in runs if k[0] == "emotion" and k[1] not in emotions)
        for e in emotions:
            colour = EMOTION_COLOURS.get(e, OKABE_ITO["black"])
            ax_em.broken_barh(runs[("emotion", e)], (0, 1), facecolors=colour, lw=0)
            handles.append(Patch(facecolor=colour))
            labels.append(e)
        statuses = [k[1] for k in runs if k[0] == "status"]
        known = [s for s in STATUS_STYLE if s in statuses]
        for status in known + sorted(s for s in statuses if s not in STATUS_STYLE):
            face, hatch, label = STATUS_STYLE.get(status, OTHER_STATUS)
            ax_em.broken_barh(
                runs[("status", status)],
                (0, 1),
                facecolors=face,
                edgecolors="#777777",
                hatch=hatch,
                lw=0.5,
            )
            handles.append(Patch(facecolor=face, edgecolor="#777777", hatch=hatch, lw=0.5))
            labels.append(label or str(status).replace("_", " "))
        ax_em.set_ylim(0, 1)
        ax_em.set_yticks([])
        ax_em.set_ylabel("emotion")
        ax_em.legend(
            handles,
            labels,
            loc="center left",
            bbox_to_anchor=(1.005, 0.5),
            fontsize=8,
            frameon=False,
            ncol=2 if len(handles) > 4 else 1,
        )

        # 4. modalities coverage
        order = ["face", "heart", "eda"]
        for row, m in enumerate(order):
            used = _runs(windows, lambda w, m=m: m in w.modalities).get(True, [])
            y = len(order) - 1 - row
            ax_mod.broken_barh(used, (y + 0.15, 0.7), facecolors=MODALITY_COLOURS[m], lw=0, label=m)
        ax_mod.set_ylim(0, len(order))
        ax_mod.set_yticks([len(order) - 1 - i + 0.5 for i in range(len(order))], order)
        ax_mod.set_ylabel("modalities")
        for label in ax_mod.get_yticklabels():
            label.set_color(MODALITY_COLOURS[label.get_text()])
            label.set_fontweight("bold")

        for ax in (ax_va, ax_st, ax_em, ax_mod):
            ax.grid(axis="x", color="#DDDDDD", lw=0.6)
            ax.set_axisbelow(True)
        for ax in (ax_va, ax_st):
            ax.grid(axis="y", color="#EEEEEE", lw=0.6)
        ax_mod.set_xlim(0, span)
        ax_mod.xaxis.set_major_locator(MultipleLocator(step))
        ax_mod.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _clock(x, long)))
        ax_mod.set_xlabel(
            f"time since {origin:%Y-%m-%d %H:%M:%S} UTC ({'h:mm' if long else 'm:ss'})"
        )
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
