"""A device run's report (calibrate / validate) as terminal text or Markdown."""

from __future__ import annotations


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v, fmt=".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def render_stream_run(report: dict) -> str:
    """A keyword stream's validation: the device's detections against the twin's, and what they are worth."""
    s, r, b, d = report["stream"], report["stream_rates"], report["bit_exact"], report["detections"]
    by_label = ", ".join(f"{k}: {v}" for k, v in r["false_accepts_by_label"].items()) or "none"
    latency = f"{r['median_latency_ms']:.0f} ms" if r.get("median_latency_ms") is not None else "n/a"
    return "\n".join([
        f"tmlrepair validate on {report['device']['describe']}; plan {report['plan_sha256'][:16]}",
        f"stream: {s['steps']:,} steps, {s['utterances']} utterances, {s['hours']:.2f} h ({s['source']})",
        f"keyword detections on the device: {d['device']} (the Python twin: {d['twin']}); false accepts "
        f"{r['false_accepts']} = {r['fa_per_hour']:.1f} per hour (target {report.get('target_fa_per_hour')}); "
        f"false-reject rate {_pct(r['false_reject_rate'])} of {r['keyword_events']}; median latency {latency}",
        f"  false accepts by the label of the utterance they fell in: {by_label}",
        f"bit-exact: {b['samples'] - b['differ']}/{b['samples']} steps equal the Python reference (label, score, "
        f"new command)" + (f" — DIFFER at {b['first_differing']}" if b["differ"] else ""),
        f"link: {report['link']['requests']} requests, {report['link']['device_restarts_survived']} device restarts "
        f"survived, {report['link']['bytes_out']} B out / {report['link']['bytes_in']} B in"]) + "\n"


def render_run(report: dict) -> str:
    """The terminal text of a calibrate or validate run's report. Long (about 65 lines) because it is the report's
    sections in reading order, one short block each; a split would only scatter them."""
    if "stream" in report:
        return render_stream_run(report)
    lines = [f"tmlrepair {report['command']} on {report['device']['describe']}",
             f"raw outputs from {report['raw_outputs_from']}; plan {report['plan_sha256'][:16]}"]
    im = report.get("in_model")
    if im:
        fmt = _pct if im["metric"] == "accuracy" else (lambda v: _num(v))
        lines.append(f"in the model ({im['model']['path']}, the firmware rebuilt from it): kept "
                     f"{', '.join(im['kept']) or 'nothing'} (decided by {im.get('folds')}-fold cross-validation on "
                     f"the integer program); holdout {im['metric']} {fmt(im['int8'])} → {fmt(im['repaired'])}")
    d = report["drift"]["device_vs_float"]
    lines.append(f"drift, device vs float: output SQNR {_num(d['sqnr_db'], '.1f')} dB"
                 + (f", top-1 agreement {_pct(d['top1_agreement'])}" if "top1_agreement" in d else ""))
    host = report["drift"]["device_vs_host_int8"]
    if host is None:
        lines.append("drift, device vs host int8: not measured (the device does not run the model)")
    else:
        lines.append(f"drift, device vs host int8 (onnxruntime): {_pct(host['equal'])} of outputs equal, "
                     f"{_pct(host['within_1_lsb'])} within 1 LSB, worst {host['max_abs_lsb']} LSB"
                     + (f", top-1 agreement {_pct(host['top1_agreement'])}" if "top1_agreement" in host else ""))
    model = report.get("model_on_device")
    if model:
        cost = (f"{model['instructions_per_inference']:,} instructions per inference"
                if "instructions_per_inference" in model else
                f"{model['counter_ticks_per_inference_median'] / model['counter_hz'] * 1e6:,.0f} µs per inference")
        ref = model.get("bit_exact_vs_python_reference")
        lines.append(f"model on the device: {cost}"
                     + (f"; {ref['samples'] - ref['differ']}/{ref['samples']} outputs equal the Python integer "
                        f"reference" if ref else "") + (f"; input: {model['input']}" if model.get("input") else ""))
    m = report["metrics"]
    n = report["holdout"]["n"]
    if "accuracy" in m["float"]:
        f, r, s = m["float"], m["int8"], m["device_shims"]
        given = (f"int8 as given {_pct(m['int8_as_given']['accuracy'])} → repaired int8 on the device "
                 if "int8_as_given" in m else "int8 ")
        lines.append(f"holdout ({n}): accuracy float {_pct(f['accuracy'])} | {given}{_pct(r['accuracy'])} → "
                     f"with device shims {_pct(s['accuracy'])} (gap recovered {_pct(m['gap_recovered'])})")
        lines.append(f"  int8 probabilities (TFLM softmax → device shims): NLL {_num(r['nll'])} → {_num(s['nll'])}; ECE {_num(r['ece'])} → {_num(s['ece'])}"
                     + (f"; per-class false-accept (macro) {_pct(s['far_macro'])}" if "far_macro" in s else ""))
    else:
        f, r, s = m["float"], m["int8"], m["device_shims"]
        lines.append(f"holdout ({n}): AUROC float {_num(f['auroc'])}, int8 {_num(r['auroc'])}")
        before = (f"float threshold on int8 {_pct(r['false_alarm_rate'])} → " if "false_alarm_rate" in r else "")
        lines.append(f"  false alarms: {before}device shim {_pct(s['false_alarm_rate'])} (detection "
                     + (f"{_pct(r['detection_rate'])} → " if before else "") + f"{_pct(s['detection_rate'])})")
        if m.get("warning"):
            lines.append(f"  WARNING: {m['warning']}")
    diagnosis = report.get("diagnosis")
    if diagnosis:
        lines.append("DIAGNOSIS (the device's model departs from the program): " + diagnosis["summary"])
    score = report.get("score_on_device")
    if score:
        lines.append(f"anomaly score computed on the device: {score['samples'] - score['differ']}/{score['samples']} "
                     "equal the Python twin on the device's own int8 input and output"
                     + (f" — DIFFER at {score['first_differing']}" if score["differ"] else "")
                     + (f"; {score['alarms_differ']} of its threshold alarms differ" if score.get("alarms_differ")
                        else ""))
    b = report["bit_exact"]
    lines.append(f"bit-exact: {b['samples'] - b['differ']}/{b['samples']} samples equal the Python reference"
                 + (f" — DIFFER at {b['first_differing']}" if b["differ"] else ""))
    ln = report["link"]
    lines.append(f"link: {ln['requests']} requests, {ln['retransmissions']} retransmitted, "
                 f"{ln['garbage_chunks']} garbage chunks skipped, {ln['device_restarts_survived']} device restarts "
                 f"survived, {ln['bytes_out']} B out / {ln['bytes_in']} B in")
    return "\n".join(lines) + "\n"
