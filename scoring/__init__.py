"""MER-UniBench scoring: dataset readers, emotion wheels, metrics, output parsing, evaluation, reports,
the valence rules for the sentiment sets (no LLM) and release-style results folders.

Pure Python and numpy: no Ray and no torch at import (the optional LLM extractor loads torch
when it is built)."""
