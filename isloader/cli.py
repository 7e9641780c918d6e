"""``isloader`` command line: wiring only; each subcommand calls library code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _storage_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    from isloader.config import parse_storage_options

    try:
        return parse_storage_options(pairs)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _add_store(sub: argparse._SubParsersAction) -> None:
    from isloader.config import StoreSettings

    store = sub.add_parser("store", help="the importance store service")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    serve = store_sub.add_parser(
        "serve", help="serve one store shard over gRPC (flags also read from ISLOADER_* variables)"
    )
    for name, field in StoreSettings.model_fields.items():
        serve.add_argument(  # text: pydantic parses it, as it parses the variable
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{field.description} (env ISLOADER_{name.upper()}, default {field.default})",
        )
    serve.set_defaults(func=_cmd_store_serve)
    health = store_sub.add_parser("health", help="exit 0 when the shard at ADDRESS is SERVING")
    health.add_argument("address", help="host:port")
    health.add_argument("--timeout", type=float, default=3.0)
    health.add_argument("--tls-ca", default=None, help="PEM CA when the shard serves TLS")
    health.add_argument("--tls-cert", default=None, help="PEM client certificate (mTLS)")
    health.add_argument("--tls-key", default=None, help="PEM client key (mTLS)")
    health.set_defaults(func=_cmd_store_health)
    reshard = store_sub.add_parser(
        "reshard", help="split or merge shard snapshots into a new number of shards"
    )
    reshard.add_argument(
        "--snapshot-uri",
        action="append",
        required=True,
        dest="sources",
        help="snapshot directory of an old shard (repeat for each)",
    )
    reshard.add_argument("--num-shards", type=int, required=True, help="the new S")
    reshard.add_argument(
        "--output", required=True, help="directory URI; new shard i goes to OUTPUT/shard-i"
    )
    reshard.set_defaults(func=_cmd_store_reshard)


def _cmd_store_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from isloader.config import StoreSettings
    from isloader.store.server import StoreServer

    flags = {name: getattr(args, name) for name in StoreSettings.model_fields}
    try:
        settings = StoreSettings(**{k: v for k, v in flags.items() if v is not None})
    except SettingsError as exc:  # a secrets file that cannot be read (a ValueError too)
        print(f"isloader store serve: {exc}: {exc.__cause__}", file=sys.stderr)
        return 2
    except (ValidationError, ValueError) as exc:
        print(f"isloader store serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    StoreServer(settings).serve_forever()
    return 0


def _cmd_store_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if args.tls_ca:
        from isloader.store.client import TlsConfig

        tls = TlsConfig(args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key)
        channel = grpc.secure_channel(args.address, tls.credentials())
    else:
        channel = grpc.insecure_channel(args.address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="isloader.v1.ImportanceStore"),
            timeout=args.timeout,
        )
    except grpc.RpcError as exc:
        print(f"{args.address}: {exc.code().name}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _cmd_store_reshard(args: argparse.Namespace) -> int:
    from isloader.store.reshard import reshard

    paths = reshard(args.sources, args.num_shards, args.output)
    print(json.dumps({"shards": paths}))
    return 0


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="list and index the shards under URI")
    p.add_argument("uri", help="directory or prefix holding the shards (any fsspec URI)")
    p.add_argument("--format", default=None, help="parquet or webdataset (default: by suffix)")
    p.add_argument("--output", default=None, help="where to write the index (default: beside)")
    p.add_argument("--columns", default=None, help="columns a trainer reads (for the estimate)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_index)


def _cmd_index(args: argparse.Namespace) -> int:
    from isloader.data.catalog import ShardCatalog
    from isloader.data.fetch import RangeFetcher

    catalog = ShardCatalog.build(
        args.uri, format=args.format, storage_options=_storage_options(args.storage_option)
    )
    path = catalog.save(args.output)
    columns = args.columns.split(",") if args.columns else None
    fetcher = RangeFetcher(catalog)
    try:
        cost = catalog.codec.amplification(catalog, fetcher, columns)
    finally:
        fetcher.close()
    for note in catalog.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"a sampled row costs about {cost.bytes_per_sampled_row:,.0f} bytes fetched for "
        f"{cost.bytes_per_row:,.0f} stored ({cost.ratio:.1f}x, read by {cost.granularity})",
        file=sys.stderr,
    )
    if cost.advice:
        print(f"advice: {cost.advice}", file=sys.stderr)
    summary = {"index": path, "shards": len(catalog.shards), "samples": len(catalog)}
    summary |= {"read_amplification": round(cost.ratio, 3), "granularity": cost.granularity}
    print(json.dumps(summary))
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="rewrite Parquet data for sampled reads (small pages, page index)"
    )
    p.add_argument("src", help="Parquet file or directory (any fsspec URI)")
    p.add_argument("dst", help="output directory (any fsspec URI)")
    p.add_argument("--rows-per-group", type=int, default=1024)
    p.add_argument("--rows-per-shard", type=int, default=65536)
    p.add_argument("--page-bytes", type=int, default=1024, help="target data page size")
    p.add_argument(
        "--shuffle-rows",
        action="store_true",
        help="also put the rows in a random order (fixes class- or source-sorted data)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --shuffle-rows")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from isloader.data.convert import convert_parquet

    catalog = convert_parquet(
        args.src,
        args.dst,
        rows_per_group=args.rows_per_group,
        rows_per_shard=args.rows_per_shard,
        shuffle_rows=args.shuffle_rows,
        seed=args.seed,
        page_bytes=args.page_bytes,
        storage_options=_storage_options(args.storage_option),
    )
    print(json.dumps({"shards": len(catalog.shards), "samples": len(catalog)}))
    return 0


def _add_store_source(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", help="the deployed store's shards, host:port[,host:port...]")
    where.add_argument("--snapshot-uri", help="a one-shard store's snapshot directory")
    p.add_argument("--token-file", default=None, help="the store's bearer token")


def _with_store(args: argparse.Namespace, call: Any) -> Any:
    """``call(catalog, store, storage_options)`` on ``args.dataset`` and the store the
    flags name (closed after)."""
    from isloader.data.catalog import ShardCatalog

    options = _storage_options(args.storage_option)
    catalog = ShardCatalog.open(args.dataset, options)
    store = _open_store(args, len(catalog))
    try:
        return call(catalog, store, options)
    finally:
        store.close()


def _open_store(args: argparse.Namespace, num_samples: int) -> Any:
    """The store named by ``--store`` (a client) or ``--snapshot-uri`` (loaded here)."""
    if args.store:
        from isloader.config import read_token_file
        from isloader.store.client import StoreClient

        token = read_token_file(args.token_file) if args.token_file else None
        return StoreClient(args.store, token=token)
    from isloader.store.local import LocalStore

    return LocalStore(num_samples, snapshot_uri=args.snapshot_uri)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the kept (unpruned) rows as a dataset of their own")
    p.add_argument("dataset", help="the source dataset URI")
    p.add_argument("output", help="a new, empty directory (any fsspec URI)")
    _add_store_source(p)
    p.add_argument(
        "--top-mass", type=float, default=None,
        help="keep the rows holding this share of the mass, not the active set",
    )  # fmt: skip
    p.add_argument("--min-per-label", type=int, default=0, help="keep at least this many a label")
    p.add_argument("--label-column", default=None, help="default: y, label, cls, ... if present")
    p.add_argument("--rows-per-group", type=int, default=1024)
    p.add_argument("--rows-per-shard", type=int, default=65536)
    p.add_argument("--prune-k", type=float, default=2.0, help="the K pruning ran with")
    p.add_argument("--seed", type=int, default=0, help="seed of the rows' order")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from isloader.export import export_kept

    manifest = _with_store(args, lambda catalog, store, options: export_kept(
        catalog, store, args.output, top_mass=args.top_mass,
        min_per_label=args.min_per_label, label_column=args.label_column,
        rows_per_group=args.rows_per_group, rows_per_shard=args.rows_per_shard,
        prune_k=args.prune_k, seed=args.seed, storage_options=options,
    ))  # fmt: skip
    print(json.dumps({k: v for k, v in asdict(manifest).items() if k != "shards"}))
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="what pruning dropped: per shard and label, by q")
    p.add_argument("dataset", help="the dataset URI")
    _add_store_source(p)
    p.add_argument("--label-column", default=None, help="default: y, label, cls, ... if present")
    p.add_argument("--top", type=int, default=16, help="hardest and easiest samples to list")
    p.add_argument("--thumbnails", default=None, help="PNG path for a grid of those samples")
    p.add_argument("--image-column", default=None, help="the column the grid draws")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from isloader.pruning_report import inspect_pruning

    report = _with_store(args, lambda catalog, store, _: inspect_pruning(
        catalog, store, label_column=args.label_column, top=args.top,
        thumbnails=args.thumbnails, image_column=args.image_column,
    ))  # fmt: skip
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from isloader.demo import DemoSettings

    p = sub.add_parser("demo", help="the paper's comparison on MNIST-1D through the pipeline")
    for name, field in DemoSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            p.add_argument(flag, dest=name, action="store_true", help=field.description)
        else:
            kind = field.annotation if field.annotation in (int, float) else str
            p.add_argument(flag, dest=name, type=kind, default=field.default,
                           help=f"{field.description or ''} (default {field.default})")  # fmt: skip
    p.set_defaults(func=_cmd_demo)


def _add_demo_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write the demo's MNIST-1D shards to DEST and index them")
    p.add_argument("dest", help="directory URI (local, s3://, ...)")
    p.add_argument("--train-size", type=int, default=60000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_demo_data)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import fsspec

    from isloader.data.catalog import ShardCatalog
    from isloader.demo.data import make_mnist1d

    options = _storage_options(args.storage_option)
    with tempfile.TemporaryDirectory() as tmp:
        local, _ = make_mnist1d(Path(tmp), args.train_size, args.test_size)
        fs, root = fsspec.core.url_to_fs(args.dest, **options)
        fs.makedirs(root, exist_ok=True)
        for shard in sorted(Path(local).glob("*.parquet")):
            fs.put_file(str(shard), f"{root.rstrip('/')}/{shard.name}")
    catalog = ShardCatalog.build(args.dest, format="parquet", storage_options=options)
    print(json.dumps({"index": catalog.save(), "samples": len(catalog)}))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from isloader.demo import DemoSettings, run_demo

    names = DemoSettings.model_fields
    run_demo(DemoSettings(**{k: v for k, v in vars(args).items() if k in names}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``isloader`` command: parse ``argv`` and run the subcommand; returns the exit code."""
    parser = argparse.ArgumentParser(prog="isloader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_store(sub)
    _add_index(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_inspect(sub)
    _add_demo(sub)
    _add_demo_data(sub)
    args = parser.parse_args(argv)
    serving = args.command == "store"
    logging.basicConfig(
        level=logging.INFO if serving else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
