"""What a review dataset holds (field names, the verdict tags) and how it is opened by name.

One sample per labeled video, keyed by ``name`` (a unique index). Per task ``T`` of the label table:
``T_status`` and ``T_error``; the OV labels are ``ov`` (one ``Classification`` per label) with the
answer in ``ov_text``; any other task's answer is the string field ``T`` (``description``,
``sentiment``, ...). ``emotion`` is the first OV label (what the embeddings panel colours by),
``stored_ov`` the labels the store holds for the sample (MER-Caption+, when preprocessing stored
them), ``clip_embedding`` / ``hubert_embedding`` the stored features mean-pooled over time.

Review: a sample tagged ``ok`` or ``wrong``, an ``ov`` label tagged ``wrong``, and a corrected label
set in ``corrected`` (a list of strings) are what `review.verdicts` reads back.
"""

from __future__ import annotations

from core.errors import AffectFlowError, InputError

OV_FIELD = "ov"
EMOTION_FIELD = "emotion"
STORED_FIELD = "stored_ov"
CORRECTED_FIELD = "corrected"
OK_TAG, WRONG_TAG = "ok", "wrong"
# Embedding field -> the brain key of its 2-D map in the App's embeddings panel.
EMBEDDINGS = {"clip_embedding": "clip", "hubert_embedding": "hubert"}
# The saved workspace `review open` starts with: the samples beside the embeddings panel.
WORKSPACE = "review"


def fiftyone():
    """The ``fiftyone`` module; without the extra, an error that says how to install it."""
    try:
        import fiftyone as fo
    except ImportError as exc:
        raise AffectFlowError(f"affectflow review needs FiftyOne ({exc}): pip install -e '.[review]'") from None
    return fo


def open_dataset(name: str):
    """The persistent dataset ``name``; an unknown name is an InputError listing the datasets there are."""
    fo = fiftyone()
    if not fo.dataset_exists(name):
        known = fo.list_datasets()
        raise InputError(f"no FiftyOne dataset named {name!r} (database {fo.config.database_dir}); "
                         f"there are: {known or 'none'} (make one with `affectflow review export`)")
    return fo.load_dataset(name)
