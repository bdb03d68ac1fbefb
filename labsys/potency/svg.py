"""Server-side inline SVG: a Levey-Jennings chart with mean, ±1/2/3 SD lines and Westgard
flags written next to the points (shape and text, never colour alone)."""
from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 330, 72, 16, 20, 96


def levey_jennings_svg(points, stats, title: str, unit: str = "") -> Markup:
    """``points`` have .value, .run_code and .flags; ``stats`` is (mean, sd) or None."""
    if not points:
        return Markup("")
    values = [p.value for p in points]
    if stats:
        mean, sd = stats
        low, high = min(min(values), mean - 3.5 * sd), max(max(values), mean + 3.5 * sd)
    else:
        mean, sd = None, None
        low, high = min(values) - 1, max(values) + 1
    span = (high - low) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / len(points))

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / span)

    parts = [f'<svg class="lj-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>",
             f'<rect class="lj-frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    if stats:
        for k, label in ((3, "+3SD"), (2, "+2SD"), (1, "+1SD"), (0, "mean"), (-1, "−1SD"), (-2, "−2SD"), (-3, "−3SD")):
            level = mean + k * sd
            cls = "lj-mean" if k == 0 else f"lj-sd{abs(k)}"
            parts.append(f'<line class="{cls}" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(level):.1f}" y2="{y(level):.1f}"/>')
            parts.append(f'<text class="lj-axis" x="{LEFT - 4}" y="{y(level) + 4:.1f}" text-anchor="end">'
                         f'{escape(label)} {level:.3g}{escape(unit)}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    parts.append(f'<path class="lj-line" d="{path}"/>')
    for i, point in enumerate(points):
        reject = [f for f in point.flags if f != "1-2s"]
        warning = "1-2s" in point.flags
        cx, cy = x(i), y(point.value)
        tip = f"{point.run_code}: {point.value:.3g}{unit}" + (f" — {', '.join(point.flags)}" if point.flags else "")
        if reject:
            parts.append(f'<rect class="lj-point lj-reject" x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10">'
                         f"<title>{escape(tip)}</title></rect>")
            parts.append(f'<text class="lj-flag" x="{cx:.1f}" y="{cy - 9:.1f}" text-anchor="middle">'
                         f"{escape(' '.join(reject))}</text>")
        else:
            cls = "lj-point lj-warning" if warning else "lj-point"
            parts.append(f'<circle class="{cls}" cx="{cx:.1f}" cy="{cy:.1f}" r="4.5"><title>{escape(tip)}</title></circle>')
            if warning:
                parts.append(f'<text class="lj-flag" x="{cx:.1f}" y="{cy - 9:.1f}" text-anchor="middle">1-2s</text>')
        parts.append(f'<text class="lj-axis" x="{cx:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="end" '
                     f'transform="rotate(-35 {cx:.1f} {HEIGHT - BOTTOM + 16})">{escape(point.run_code)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
