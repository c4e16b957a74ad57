"""Draws the cold-start chart of BENCHMARKS.md from the bench's JSON: init per function against
the hello-world Rust Lambda and the Python/boto3 baseline (log scale: the Python bar is tens of
times longer)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = json.load(open(sys.argv[1]))
names = [r["name"] for r in rows]
init = [r["init_ms"] for r in rows]
colors = ["#9e9e9e" if r["kind"] == "baseline-rust" else "#e07b39" if r["kind"] == "baseline-python" else "#2f6db5" for r in rows]
fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
bars = ax.barh(names, init, color=colors)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("init: spawn to first /invocation/next (ms, median, log scale)")
ax.set_title(sys.argv[3] if len(sys.argv) > 3 else "Cold start per function")
for bar, value in zip(bars, init):
    ax.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2, "%.1f ms" % value, va="center", fontsize=9)
ax.set_xlim(right=max(init) * 4)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
