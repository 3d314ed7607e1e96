"""MER-UniBench scoring: dataset readers, emotion wheels, metrics, output parsing, evaluation, reports.

Pure Python and numpy: no Ray and no torch at import (the optional LLM extractor loads torch
when it is built)."""
