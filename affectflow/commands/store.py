"""``affectflow store ...``: inspect and tidy a feature store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from affectflow.options import add_verbose_option
from core.console import echo


def _storage_options(text: str | None) -> dict:
    from core.errors import InputError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--storage-options: not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"--storage-options: expected a JSON object, got {text!r}")
    return value


def store_inspect(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The store's summary (see ``FeatureStore.inspect``)."""
    from features.store import FeatureStore

    return FeatureStore(path, storage_options).inspect()


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def format_inspect(report: dict[str, Any]) -> str:
    """Plain-text rendering of ``store_inspect``."""
    s = report["samples"]
    lines = [
        f"store {report['path']}  ({_human(report['bytes'])} on disk)",
        f"samples: {s['total']} total, {s['ok']} ok, {s['failed']} failed",
        "",
        f"{'group':<34} {'parts':>5} {'uncommitted':>11} {'ok':>7} {'failed':>7} {'bytes':>10}  arrays",
    ]
    for g in report["groups"]:
        arrays = ", ".join(f"{k} {tuple(v['shape'])} {v['dtype']}" for k, v in g["arrays"].items())
        lines.append(
            f"{g['group']:<34} {g['parts']:>5} {g['uncommitted_parts']:>11} {g['ok']:>7} {g['failed']:>7} "
            f"{_human(g['bytes']):>10}  {arrays}"
        )
    specs = [g for g in report["groups"] if g.get("spec")]
    if specs:
        lines += ["", "encoder specs:"]
        for g in specs:
            sp = g["spec"]
            pre = ", ".join(f"{k}={v}" for k, v in sp["preprocess"].items()) or "-"
            lines.append(
                f"  {g['modality']}/{g['spec_id']}: {sp['encoder']} (weights {sp['weights_hash']}), "
                f"layer {sp['layer']}, pooling {sp['pooling']}, [{sp['num_steps']}, {sp['dim']}] {sp['dtype']}; "
                f"preprocess {pre}"
            )
    fails = report["failures"]
    if fails["by_kind"]:
        lines += ["", "failures by kind:"]
        lines += [f"  {kind}: {count}" for kind, count in fails["by_kind"].items()]
        lines += ["examples:"] + [f"  {e['name']}: {e['error']}" for e in fails["examples"]]
    return "\n".join(lines)


def _cmd_inspect(args: argparse.Namespace) -> int:
    report = store_inspect(args.path, _storage_options(args.storage_options))
    echo(json.dumps(report, indent=2) if args.json else format_inspect(report))
    return 0


def _cmd_vacuum(args: argparse.Namespace) -> int:
    from features.store import FeatureStore

    store = FeatureStore(args.path, _storage_options(args.storage_options))
    store.require_store()  # tidying a path that holds no store is a mistake, not a no-op
    removed = store.vacuum(superseded=args.superseded)
    echo(f"removed {removed['uncommitted']} uncommitted and {removed['superseded']} superseded parts")
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from features.store import FeatureStore

    store = FeatureStore(args.path, _storage_options(args.storage_options))
    store.require_store()
    done = store.compact(part_size=args.part_size)
    echo(f"wrote {done['written']} parts of up to {args.part_size} samples, removed {done['removed']} old parts")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect or tidy a feature store")
    ssub = p.add_subparsers(dest="store_command", metavar="ACTION")
    ssub.required = True

    q = ssub.add_parser("inspect", help="counts, arrays, shapes, encoder specs and failures of a store")
    q.add_argument("path", help="store path or URL (local, file://, s3://, memory://)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--storage-options", metavar="JSON", help="fsspec options, e.g. '{\"anon\": false}'")
    add_verbose_option(q)
    q.set_defaults(func=_cmd_inspect)

    q = ssub.add_parser("vacuum", help="delete uncommitted parts (run only while no job writes to the store)")
    q.add_argument("path", help="store path or URL")
    q.add_argument("--superseded", action="store_true", help="also delete parts whose every sample was rewritten later")
    q.add_argument("--storage-options", metavar="JSON", help="fsspec options as JSON")
    add_verbose_option(q)
    q.set_defaults(func=_cmd_vacuum)

    q = ssub.add_parser("compact", help="merge small parts into larger ones (run only while no job writes)")
    q.add_argument("path", help="store path or URL")
    q.add_argument("--part-size", type=int, default=256, help="samples per part after compaction (default 256)")
    q.add_argument("--storage-options", metavar="JSON", help="fsspec options as JSON")
    add_verbose_option(q)
    q.set_defaults(func=_cmd_compact)
