"""Repairs after the model: estimators over its outputs (temperature, vector scaling, per-class thresholds, anomaly
threshold and window boundary, the keyword stream recognizer), each with a float path and an exact integer one."""
