"""Scheduled retraining (`reweigh retrain`, `reweigh serve`; docs/retraining.md).

    flow.py       the retrain flow: anything new? → drift → challenger as a DVC experiment → judged → promoted or not
    artifact.py   the run's summary line and its markdown report (the retrain-report artifact in the UI)
    drift.py      the new data against the champion's before training: label shift, lengths, unknown tokens, copies, conflicts
    judge.py      both sides' models score the new test split and the reference set; the promotion rule decides
    commands.py   DVC and git commands streamed into the run's log, overrides checked, the workspace lock
"""
