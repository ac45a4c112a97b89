"""reweigh: train and compare text classifiers reproducibly.

Importing the package switches off the telemetry of Prefect, DVC and Great Expectations
(unless the user set those variables), so no run phones home by accident.
"""
from reweigh import _env  # noqa: F401  (side effect: quiet, offline defaults)

__version__ = "0.1.0"
