"""Command line: python -m redtrain {train,export,validate} ...

User errors (bad config, missing data, broken package) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from redtrain.errors import UserError


def _train(args: argparse.Namespace) -> int:
    from redtrain.config import load_config
    from redtrain.train import train

    cfg = load_config(args.config)
    result = train(cfg, args.out, progress=not args.quiet)
    ev = result.evaluation
    print(f"trained {cfg.name} ({cfg.method}, {cfg.members} members) in {result.seconds:.0f} s: "
          f"random-draw acc {ev['randomDrawAccuracy']:.4f}, ensemble acc {ev['ensembleAccuracy']:.4f} -> {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from redtrain.export import export_run

    path = export_run(args.run, args.out, name=args.name, version=args.version)
    print(f"exported {args.run} -> {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from redtrain.manifest import check_package

    manifest = check_package(args.package)
    print(f"{args.package}: valid {manifest['kind']} package '{manifest['name']}' "
          f"with {len(manifest['members'])} members")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redtrain", description="Train and export RED / PS-RED model packages.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an ensemble from a YAML config (resumes an unfinished run)")
    p.add_argument("--config", required=True, help="YAML config, e.g. training/configs/fmnist-red.yaml")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/fmnist-red")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export a finished run as a redserve model package")
    p.add_argument("--run", required=True, help="run folder written by train")
    p.add_argument("--out", required=True, help="package folder, e.g. models/fmnist-red")
    p.add_argument("--name", help="package name (default: the config's name)")
    p.add_argument("--version", default="1.0.0", help="package version (default 1.0.0)")
    p.set_defaults(func=_export)

    p = sub.add_parser("validate", help="check a model package against docs/model-format.md")
    p.add_argument("package", help="package folder, e.g. models/fmnist-red")
    p.set_defaults(func=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"redtrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"redtrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
