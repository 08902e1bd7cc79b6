"""Differentiable architecture search for student image encoders (EfficientMedSAM, ``--method nas``).

``ops.py``: the candidate operations with their MACs; ``supernet.py``: the searchable encoder
(mixed operations, searchable widths, expected MACs, genotype derivation); ``genotype.py``: the
found architecture as JSON and as a registered promptable student (``nas``).
"""
