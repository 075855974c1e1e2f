// The utilization-over-time chart (uPlot, bundled from npm): x = the entry's recorded_at,
// y = its utilization_pct. Points are appended as new ledger entries arrive.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const MAX_POINTS = 5000;

export class UtilizationChart {
  constructor(container) {
    this.container = container;
    this.xs = [];
    this.ys = [];
    this.plot = null;
  }

  width() {
    return Math.max(280, Math.min(900, this.container.clientWidth || 600));
  }

  // Entries oldest first (each with recorded_at and utilization_pct).
  add(entries) {
    for (const entry of entries) {
      this.xs.push(Date.parse(entry.recorded_at) / 1000);
      this.ys.push(Number(entry.utilization_pct));
    }
    if (this.xs.length > MAX_POINTS) {
      this.xs.splice(0, this.xs.length - MAX_POINTS);
      this.ys.splice(0, this.ys.length - MAX_POINTS);
    }
    this.container.dataset.points = String(this.xs.length);
    this.container.dataset.last = this.ys.length ? String(this.ys[this.ys.length - 1]) : "";
    this.draw();
  }

  draw() {
    const data = [this.xs, this.ys];
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    this.plot = new uPlot(
      {
        width: this.width(),
        height: 240,
        scales: {
          // Entries recorded in one batch share a time: widen a zero-width range to 2 minutes.
          x: { time: true, range: (u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) },
          y: { range: [0, 100] },
        },
        axes: [{}, { label: "utilization %", size: 60 }],
        series: [
          {},
          {
            label: "utilization %",
            stroke: "#0b57a4",
            width: 2,
            fill: "rgba(11, 87, 164, 0.12)",
            // A balance holds until the next entry: a step, not a slope between entries.
            paths: uPlot.paths.stepped({ align: 1 }),
          },
        ],
        legend: { live: false },
      },
      data,
      this.container,
    );
    this.resize = () => this.plot && this.plot.setSize({ width: this.width(), height: 240 });
    window.addEventListener("resize", this.resize);
  }

  destroy() {
    if (this.resize) window.removeEventListener("resize", this.resize);
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
