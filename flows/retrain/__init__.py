"""Scheduled retraining (`reweigh retrain`, `reweigh serve`; docs/retraining.md).

    flow.py       the retrain flow: anything new? → challenger as a DVC experiment → judged → promoted or not
    judge.py      both sides' models score the challenger's test split; the promotion rule decides
    commands.py   DVC and git commands streamed into the run's log, overrides checked, the workspace lock
"""
