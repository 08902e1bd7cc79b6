"""samdistill: distill the Segment Anything family into small, fast medical segmentation models.

Public API::

    import samdistill
    model = samdistill.load_model("litemedsam")          # bundled real weights, offline
    masks = model.predict(image, boxes)                    # NxHxW bool, boxes in original pixels
    samdistill.evaluate_model("litemedsam", "../shared/data/kvasir_seg", out_dir="runs/eval", limit=40)
"""

from samdistill._version import __version__

from samdistill.deploy.predictor import Predictor  # noqa: E402
from samdistill.api import (  # noqa: E402
    evaluate_model,
    list_datasets,
    list_models,
    load_model,
    open_dataset,
    save_model,
)

import samdistill.methods  # noqa: E402,F401  (registers every method, and its run config with samdistill.config)

__all__ = ["Predictor", "__version__", "evaluate_model", "list_datasets", "list_models", "load_model", "open_dataset", "save_model"]
