"""python -m flows.report: the report stage (flows/report/flow.py)."""
from flows.common import run_stage
from flows.report.flow import report_flow

if __name__ == "__main__":
    run_stage(report_flow, "report")
