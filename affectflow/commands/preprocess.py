"""``affectflow preprocess``: a corpus -> the feature store."""

from __future__ import annotations

import argparse
import json

from core.console import echo, progress


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from affectflow.options import config_from_args, failure_gate
    from core.errors import InputError
    from pipelines.job import PreprocessRequest, preprocess

    extra = []
    if args.max_failure_rate is not None:
        extra.append(f"preprocess.max_failure_rate={args.max_failure_rate}")
    if args.follow_symlinks:
        extra.append("preprocess.follow_symlinks=true")
    cfg = config_from_args(args, extra)
    options = {}
    if args.storage_options:
        try:
            options = json.loads(args.storage_options)
        except ValueError as exc:
            raise InputError(f"--storage-options: not JSON ({exc}): {args.storage_options!r}") from None
        if not isinstance(options, dict):
            raise InputError(f"--storage-options: expected a JSON object, got {args.storage_options!r}")
    request = PreprocessRequest(args.corpus, args.store, cfg, layout=args.layout, models=args.models,
                                faces=args.faces, limit=args.limit, retry_failed=args.retry_failed,
                                storage_options=options or None)
    with progress("preprocess", unit="videos") as bar:
        summary = preprocess(request, progress=bar)
    echo(summary.format())
    return failure_gate(summary, cfg.preprocess.max_failure_rate, "preprocess")


def register(sub: argparse._SubParsersAction) -> None:
    from affectflow.options import add_config_options, count, fraction

    p = sub.add_parser("preprocess", help="decode, encode and store features for a corpus (Ray Data)")
    p.add_argument("--corpus", required=True, help="corpus root (mer2025/folder) or WebDataset shards (dir, .tar, URL)")
    p.add_argument("--store", required=True, help="feature store path or fsspec URL (e.g. s3://bucket/store.zarr)")
    p.add_argument("--layout", choices=("mer2025", "folder", "webdataset"), default=None,
                   help="corpus layout (default: preprocess.layout, mer2025)")
    p.add_argument("--models", default=None,
                   help="directory holding clip/, hubert/ (and whisper/); default paths.models")
    p.add_argument("--faces", choices=("openface", "opencv", "pyfeat"), default=None,
                   help="face backend (default: preprocess.faces, openface)")
    p.add_argument("--limit", type=count, default=None, help="only the first N manifest rows")
    p.add_argument("--retry-failed", action="store_true", help="retry samples recorded as failed")
    p.add_argument("--max-failure-rate", type=fraction, default=None,
                   help="exit 1 when more than this fraction of the store's samples is recorded as failed, "
                        "earlier runs' failures included (default preprocess.max_failure_rate, 0.01)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="folder corpora: read links whose target is outside the corpus root (refused by default)")
    p.add_argument("--storage-options", default=None, help="fsspec options for the store as JSON")
    add_config_options(p)
    p.set_defaults(func=_cmd_preprocess)
