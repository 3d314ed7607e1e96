"""Human review of a labeled corpus in FiftyOne: the dataset (videos, labels, descriptions, stored
embeddings and their 2-D maps), the App that shows it, and the reviewers' verdicts coming back.

FiftyOne is the optional extra ``review`` (``pip install -e ".[review]"``); nothing here imports it
at module import, so the rest of AffectFlow runs without it.
"""
