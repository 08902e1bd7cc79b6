"""Evaluation: metrics, the eval loop, efficiency measurements."""
