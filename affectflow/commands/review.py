"""``affectflow review export|open|pull``: a labeled corpus in FiftyOne, and the reviewers' verdicts back."""

from __future__ import annotations

import argparse

from affectflow.options import add_verbose_option
from core.console import echo, progress


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from review.export import ExportRequest, export

    request = ExportRequest(labels=Path(args.labels), corpus=args.corpus, dataset=args.dataset, store=args.store,
                            layout=args.layout, cache=Path(args.cache) if args.cache else None, visual=args.visual,
                            method=args.method)
    with progress("videos", unit="videos") as bar:
        summary = export(request, progress=bar)
    echo(summary.format())
    echo(f"open it: affectflow review open {args.dataset}")
    return 0


def _cmd_open(args: argparse.Namespace) -> int:
    from review.app import serve

    serve(args.dataset, port=args.port, address=args.address, remote=args.remote, announce=echo)
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from core.paths import require_writable
    from review.verdicts import pull

    require_writable(args.out, "--out", folder=False)
    echo(pull(args.dataset, args.out).format())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="look at a labeled corpus in FiftyOne and bring review verdicts back")
    rsub = p.add_subparsers(dest="review_command", metavar="ACTION")
    rsub.required = True

    q = rsub.add_parser("export", help="a label table, its videos and stored embeddings -> a FiftyOne dataset "
                                       "(a rerun updates it in place)")
    q.add_argument("--labels", required=True, metavar="TABLE", help="label table written by `affectflow label`")
    q.add_argument("--corpus", required=True, help="the corpus that was labeled (local folder or s3:// root)")
    q.add_argument("--store", help="feature store of those samples: CLIP and HuBERT embeddings, their 2-D maps, "
                                   "the stored labels")
    q.add_argument("--dataset", required=True, metavar="NAME", help="FiftyOne dataset name")
    q.add_argument("--layout", choices=["mer2025", "folder"], default="mer2025", help="corpus layout (default mer2025)")
    q.add_argument("--visual", choices=["face", "frame"], default="face",
                   help="the store's visual features to embed (default face)")
    q.add_argument("--method", choices=["umap", "tsne", "pca"], default="umap",
                   help="2-D map of the embeddings (FiftyOne Brain; default umap)")
    q.add_argument("--cache", metavar="DIR", help="where videos of an s3:// corpus are fetched (default "
                                                 ".affectflow/review-cache/NAME; S3 settings from the AWS variables)")
    add_verbose_option(q)
    q.set_defaults(func=_cmd_export)

    q = rsub.add_parser("open", help="serve the FiftyOne App on a dataset (until Ctrl-C)")
    q.add_argument("dataset", metavar="NAME", help="dataset made by `affectflow review export`")
    q.add_argument("--port", type=int, default=5151, help="App port (default 5151)")
    q.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; the App has no login: another address only behind "
                        "a firewall or an authenticating proxy)")
    q.add_argument("--remote", action="store_true",
                   help="a remote session (cluster head): open no browser, print how to forward the port")
    add_verbose_option(q)
    q.set_defaults(func=_cmd_open)

    q = rsub.add_parser("pull", help="reviewers' verdicts (tags ok/wrong, corrected labels) -> a CSV for "
                                     "`affectflow train --labels`")
    q.add_argument("dataset", metavar="NAME", help="the reviewed dataset")
    q.add_argument("--out", required=True, metavar="VERDICTS.csv",
                   help="CSV to write: name, verdict, labels, tagged_at")
    add_verbose_option(q)
    q.set_defaults(func=_cmd_pull)
