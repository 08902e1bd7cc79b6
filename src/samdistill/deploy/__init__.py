"""Deployment: ONNX export (``onnx.py``)."""
