"""Batched generation, batch labeling on Ray, single-video inference and the MER-UniBench scorer."""
