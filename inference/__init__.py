"""Batch labeling on Ray (stage, table, job), single-video inference and the MER-UniBench run."""
