"""marco-asr control plane: API, plan, schedule, resources, and the two drivers.

No torch import anywhere under this package: the operator image has none.
"""

__version__ = "0.1.0"
