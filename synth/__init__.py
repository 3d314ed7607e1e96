"""Synthetic assets for tests, benches and the demo: tiny random models, a MER2025-layout corpus, feature
stores, a MER-UniBench folder, and the end-to-end demo that runs on them."""
