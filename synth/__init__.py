"""Synthetic assets for tests, benches and the demo: tiny random models, a MER2025-layout corpus, a MER-UniBench folder."""
