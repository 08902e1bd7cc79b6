"""Pictures: overlays of masks on images (``overlays.py``), training curves (``plots.py``) and bench's
Pareto figure (``pareto.py``). Used by the jobs, deploy and the demo; imports nothing of theirs."""
