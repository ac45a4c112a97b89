"""Offline, quiet defaults for the libraries reweigh drives.

Set before prefect / dvc / great_expectations are imported; `setdefault` leaves a user's own choice alone.
"""
import os

_DEFAULTS = {
    # Prefect: no analytics; the temporary local API can be slow to start on a loaded 2-core machine.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # DVC: no analytics (core.analytics / core.check_update are also off in .dvc/config).
    "DVC_NO_ANALYTICS": "1",
    # DVCLive (train stages) and DVC experiments: never post to DVC Studio, token or not.
    "DVC_STUDIO_OFFLINE": "true",
    # Great Expectations: no usage statistics.
    "GX_ANALYTICS_ENABLED": "false",
    # tokenizers forks badly after its thread pool started; we parallelise inside it, not around it.
    "TOKENIZERS_PARALLELISM": "true",
}

for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
