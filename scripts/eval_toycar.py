"""ToyCar (MLPerf Tiny AD) scores: how far a float-fitted threshold misfires on int8, and the refit.

For each machine id, on the full-int8 scores (``tflite_quant_fullint_*``):

1. a threshold fitted to 10 % false alarms on the float scores (Keras ``anomaly_score_*``
   and TFLite float ``tflite_anomaly_score_*``) → its false-alarm rate on the int8 scores;
2. ``tmlrepair fit-scores`` on the even-numbered normal clips, judged on the odd-numbered
   ones (and on all anomalous clips for the detection rate);
3. the same refit over 1,000 random half-splits of the normal clips: mean, 5–95 % band,
   and the share of splits within ±3 points — the judge half has 175 clips, so its
   false-alarm rate alone carries about ±2.3 points of binomial noise.

    python scripts/eval_toycar.py [--scores DIR]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from repair import metrics as M
from repair.repairs import ScoreThreshold

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "real" / "mlperf_tiny" / "data" / "ad_scores_toycar"


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = list(csv.reader(path.open()))
    return np.array([float(r[1]) for r in rows]), np.array([r[0].startswith("anomaly") for r in rows], np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores", type=Path, default=DEFAULT)
    ap.add_argument("--target", type=float, default=0.10)
    args = ap.parse_args()
    t = args.target
    print("| id | FAR on int8, Keras-float threshold | FAR on int8, TFLite-float threshold | refit even→odd: FAR | "
          "detection | 1,000 random halves: mean FAR | 5–95 % | within ±3 pts |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mid in ("01", "02", "03", "04"):
        ks, ky = load(args.scores / f"anomaly_score_ToyCar_id_{mid}.csv")
        fs, fy = load(args.scores / f"tflite_anomaly_score_ToyCar_id_{mid}.csv")
        qs, qy = load(args.scores / f"tflite_quant_fullint_anomaly_score_ToyCar_id_{mid}.csv")
        keras = M.alarm_rates(ScoreThreshold(t).fit(ks, ky).apply(qs), qy)["false_alarm_rate"]
        tfl = M.alarm_rates(ScoreThreshold(t).fit(fs, fy).apply(qs), qy)["false_alarm_rate"]
        normal = np.flatnonzero(qy == 0)
        rep = ScoreThreshold(t).fit(qs[normal[0::2]])
        far_odd = rep.apply(qs[normal[1::2]]).mean()
        det = rep.apply(qs[qy == 1]).mean()
        rng = np.random.default_rng(0)
        fars = []
        for _ in range(1000):
            perm = rng.permutation(normal)
            half = len(perm) // 2
            fars.append(ScoreThreshold(t).fit(qs[perm[:half]]).apply(qs[perm[half:]]).mean())
        fars = np.array(fars)
        lo, hi = np.quantile(fars, [0.05, 0.95])
        print(f"| {mid} | {keras:.1%} | {tfl:.1%} | {far_odd:.1%} | {det:.1%} | {fars.mean():.1%} | "
              f"{lo:.1%}–{hi:.1%} | {(np.abs(fars - t) <= 0.03).mean():.0%} |")


if __name__ == "__main__":
    main()
