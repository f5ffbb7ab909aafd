"""Command line: python -m redtrain {train,export,import,validate,evaluate,compare,study,bench-package} ...

User errors (bad config, missing data, broken package) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from redtrain.errors import UserError


def _train(args: argparse.Namespace) -> int:
    from redtrain.config import load_config
    from redtrain.train import train

    cfg = load_config(args.config)
    if args.seed is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, seed=args.seed)
    result = train(cfg, args.out, progress=not args.quiet)
    ev = result.evaluation
    print(f"trained {cfg.name} ({cfg.method}, {cfg.members} members) in {result.seconds:.0f} s: "
          f"random-draw acc {ev['randomDrawAccuracy']:.4f}, ensemble acc {ev['ensembleAccuracy']:.4f} -> {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from redtrain.export import export_run, export_runs

    if len(args.run) > 1:
        if args.hypernet_storage is not None:
            raise UserError("--hypernet-storage applies to one ps-red run, not to members joined from several runs")
        path = export_runs(args.run, args.out, name=args.name, version=args.version)
    else:
        path = export_run(args.run[0], args.out, name=args.name, version=args.version,
                          hypernet_storage=args.hypernet_storage)
    print(f"exported {', '.join(args.run)} -> {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from redtrain.manifest import check_package

    manifest = check_package(args.package)
    print(f"{args.package}: valid {manifest['kind']} package '{manifest['name']}' "
          f"with {len(manifest['members'])} members")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import shlex

    import torch

    from redtrain.evaluate import Settings, run_evaluation

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("limit", "steps", "pgd_steps", "curve_steps", "transfer_steps", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not 0 < args.eps <= 1:
        raise UserError(f"--eps must be in (0, 1] (pixel scale), got {args.eps}")
    settings = Settings(eps=args.eps, limit=args.limit, apgd_steps=args.steps, pgd_steps=args.pgd_steps,
                        curve_steps=args.curve_steps, transfer_steps=args.transfer_steps,
                        batch_size=args.batch_size, seed=args.seed, data_root=args.data_root)
    command = "python -m redtrain " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = run_evaluation(args.package, args.out, settings, command, progress=not args.quiet, reuse=args.reuse)
    print(f"wrote {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from redtrain.paired import describe, load_scored, paired_difference

    result = paired_difference(load_scored(args.a), load_scored(args.b), samples=args.samples, seed=args.seed)
    print(json.dumps(result) if args.json else describe(result))
    return 0


def _study(args: argparse.Namespace) -> int:
    from redtrain.study import run_study

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    stages = set(args.stages.split(","))
    unknown = stages - {"train", "export", "evaluate", "report"}
    if unknown:
        raise UserError(f"--stages: unknown stage(s) {', '.join(sorted(unknown))} (allowed: train, export, evaluate, report)")
    path = run_study(args.plan, args.jobs, stages, set(args.only.split(",")) if args.only else None,
                     redo=set(args.redo.split(",")) if args.redo else None)
    print(f"wrote {path}" if path else "no run evaluated yet: no report")
    return 0


def _bench_package(args: argparse.Namespace) -> int:
    from redtrain.benchpkg import BenchSpec, package_bytes, parse_input, write_bench_package

    spec = BenchSpec(args.arch, args.members, args.seed, parse_input(args.input), args.classes)
    manifest, written = write_bench_package(spec, args.out, force=args.force)
    parameters = manifest["members"][0]["parameters"]
    state = "wrote" if written else "up to date (same arch, members, seed, input and classes; --force rebuilds):"
    print(f"{state} {args.out}: {spec.members} {spec.arch} members of {parameters} parameters with random weights, "
          f"{package_bytes(Path(args.out))} bytes")
    return 0


def _floats(flag: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers, got '{text}'") from None


def _import_overrides(args: argparse.Namespace) -> dict:
    """The flags that were given, in the shape of an import spec (redtrain.importer.ImportSpec)."""
    raw: dict = {}
    for key in ("name", "version", "description", "module", "torchscript", "dataset", "data_root", "test_limit"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.onnx:
        raw["onnx"] = args.onnx
    if args.checkpoint:
        raw["checkpoints"] = args.checkpoint
    if args.module_kwargs is not None:
        try:
            raw["module_kwargs"] = json.loads(args.module_kwargs)
        except json.JSONDecodeError as exc:
            raise UserError(f"--module-kwargs: not JSON ({exc})") from None
    key_map = {k: getattr(args, k) for k in ("state_key", "strip_prefix", "rename_prefix") if getattr(args, k)}
    if key_map:
        raw["key_map"] = key_map
    inp: dict = {}
    if args.input is not None:
        parts = args.input.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise UserError(f"--input: expected CxHxW, e.g. 3x32x32, got '{args.input}'")
        inp["shape"] = [int(p) for p in parts]
    for key in ("channels", "scale"):
        if getattr(args, key) is not None:
            inp[key] = getattr(args, key)
    if args.input_name is not None:
        inp["name"] = args.input_name
    for key in ("mean", "std"):
        if getattr(args, key) is not None:
            inp[key] = _floats(f"--{key}", getattr(args, key))
    resize = {k: getattr(args, k) for k in ("fit", "kernel", "background") if getattr(args, k) is not None}
    if resize:
        inp["resize"] = resize
    if inp:
        raw["input"] = inp
    out = {k: v for k, v in (("name", args.output_name), ("classes", args.classes)) if v is not None}
    if out:
        raw["output"] = out
    if args.labels is not None and args.labels_file is not None:
        raise UserError("give --labels or --labels-file, not both")
    if args.labels is not None:
        raw["labels"] = args.labels.split(",")
    if args.labels_file is not None:
        try:
            raw["labels"] = [line.strip() for line in Path(args.labels_file).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise UserError(f"--labels-file: {exc}") from None
    return raw


def _import(args: argparse.Namespace) -> int:
    from redtrain.importer import import_package, load_spec

    spec = load_spec(_import_overrides(args), config=args.config, preset=args.preset)
    manifest = import_package(spec, args.out)
    ev = manifest.get("evaluation")
    accuracy = f", random-draw acc {ev['randomDrawAccuracy']:.4f} on {ev['examples']} test images" if ev else ""
    print(f"imported {len(manifest['members'])} members ({spec.source_format}) -> {args.out}: input "
          f"{manifest['input']['shape']}, {manifest['output']['classes']} classes{accuracy}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redtrain", description="Train and export RED / PS-RED model packages.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an ensemble from a YAML config (resumes an unfinished run)")
    p.add_argument("--config", required=True, help="YAML config, e.g. training/configs/fmnist-red.yaml")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/fmnist-red")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, help="override the config's seed (independent members trained as one run "
                                             "per seed, joined by `export --run A --run B ...`)")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export a finished run as a redserve model package")
    p.add_argument("--run", required=True, action="append",
                   help="run folder written by train; repeat it to join the members of several runs that differ "
                        "only in seed (independent members trained side by side) into one package")
    p.add_argument("--out", required=True, help="package folder, e.g. models/fmnist-red")
    p.add_argument("--name", help="package name (default: the config's name)")
    p.add_argument("--version", default="1.0.0", help="package version (default 1.0.0)")
    p.add_argument("--hypernet-storage", choices=["float32", "float16"],
                   help="ps-red: how hypernet.onnx stores its parameters (default: the run's hypernet.storage)")
    p.set_defaults(func=_export)

    p = sub.add_parser("validate", help="check a model package against docs/model-format.md")
    p.add_argument("package", help="package folder, e.g. models/fmnist-red")
    p.set_defaults(func=_validate)

    p = sub.add_parser("evaluate", help="white-box robustness of packages (adaptive and weak protocols)")
    p.add_argument("--package", action="append", default=[], required=True,
                   help="package folder; repeat for several; PATH:K evaluates member K alone")
    p.add_argument("--out", default="reports", help="folder for robustness.md, robustness.json and plots")
    p.add_argument("--limit", type=int, help="evaluate the first N test images (default: all)")
    p.add_argument("--eps", type=float, default=0.1, help="Linf radius in pixel scale [0, 1] (default 0.1)")
    p.add_argument("--steps", type=int, default=100, help="APGD-CE / APGD-DLR iterations (default 100)")
    p.add_argument("--pgd-steps", type=int, default=50, help="PGD iterations (default 50)")
    p.add_argument("--curve-steps", type=int, default=50, help="APGD-CE iterations per eps of the curve (default 50)")
    p.add_argument("--transfer-steps", type=int, default=20, help="PGD iterations for the transfer matrix (default 20)")
    p.add_argument("--batch-size", type=int, default=500, help="examples attacked together (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and the weak protocol's draws")
    p.add_argument("--data-root", help="dataset folder (default: the one recorded in the package)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--reuse", action="store_true",
                   help="keep results already in --out for unchanged packages evaluated with the same settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("compare", help="paired difference of adaptive accuracy between two evaluations of the same images")
    p.add_argument("a", help="FILE#TARGET: a robustness.json and a target's name or spec (optional if it holds one)")
    p.add_argument("b", help="the same for the other package; the difference is b minus a")
    p.add_argument("--samples", type=int, default=10000, help="bootstrap resamples of the images (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_compare)

    p = sub.add_parser("study", help="train, export, evaluate and report every arm and seed of a study plan (resumable)")
    p.add_argument("--plan", required=True, help="study plan YAML, e.g. training/configs/experiments/study.yaml")
    p.add_argument("--jobs", type=int, default=2, help="runs trained or evaluated at once, one thread each (default 2)")
    p.add_argument("--stages", default="train,export,evaluate,report",
                   help="comma-separated subset of train,export,evaluate,report (default: all)")
    p.add_argument("--only", help="comma-separated arm or run names, e.g. red or at-s1 (default: every run)")
    p.add_argument("--redo", help="comma-separated run names to retrain although results.json records them")
    p.set_defaults(func=_study)

    p = sub.add_parser("bench-package",
                       help="write a benchmark package: N members of a real architecture with seeded random weights")
    p.add_argument("--arch", required=True, help="member architecture: resnet20 or resnet18 (CIFAR variant)")
    p.add_argument("--members", type=int, required=True, help="number of members (at least 1)")
    p.add_argument("--seed", type=int, required=True, help="seed of every member's weights and the golden images")
    p.add_argument("--out", required=True, help="package folder; only a benchmark package there is ever replaced")
    p.add_argument("--input", default="3x32x32", help="CxHxW of one image, C 1 or 3 (default 3x32x32)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--force", action="store_true", help="rebuild even when --out holds the same benchmark package")
    p.set_defaults(func=_bench_package)

    p = sub.add_parser("import", help="make a model package from N ONNX files, or a PyTorch module and N checkpoints",
                       description="Flags override the --config YAML spec, which overrides the --preset "
                                   "(docs/import.md).")
    p.add_argument("--out", required=True, help="package folder; only a package folder there is ever replaced")
    p.add_argument("--config", help="YAML import spec (keys as ImportSpec in redtrain/importer.py; paths relative to it)")
    p.add_argument("--preset", help="a known checkpoint layout: red-resnet18 (the public RED code's CIFAR-10 members)")
    p.add_argument("--name", help="package name, [a-z0-9][a-z0-9._-]* (the served model name)")
    p.add_argument("--version", help="package version (default 1.0.0)")
    p.add_argument("--description", help="one line for humans")
    p.add_argument("--onnx", action="append", help="an ONNX member file; repeat, one per member")
    p.add_argument("--module", help="the member class, package.module:Class or path/file.py:Class")
    p.add_argument("--module-kwargs", help="the class's constructor arguments as a JSON object")
    p.add_argument("--torchscript", help="a TorchScript file of the member (instead of --module)")
    p.add_argument("--checkpoint", action="append", help="a state-dict checkpoint; repeat, one per member")
    p.add_argument("--state-key", help="the checkpoint entry holding the state dict (default: found)")
    p.add_argument("--strip-prefix", action="append", help="remove this key prefix, e.g. module. (repeatable)")
    p.add_argument("--rename-prefix", action="append", help="OLD=NEW: replace a key prefix (repeatable)")
    p.add_argument("--input", help="CxHxW of one image (default: the ONNX files'; required with a module)")
    p.add_argument("--input-name", help="the members' input name (default: the ONNX files')")
    p.add_argument("--channels", choices=["gray", "rgb"], help="colour space (default: from C)")
    p.add_argument("--scale", type=float, help="8-bit pixel multiplier (default 1/255)")
    p.add_argument("--mean", help="per-channel mean after scaling, comma-separated (default 0)")
    p.add_argument("--std", help="per-channel std after scaling, comma-separated (default 1)")
    p.add_argument("--fit", help="resize fit: fill, contain (default) or cover")
    p.add_argument("--kernel", help="resize kernel: nearest, linear (default), cubic or lanczos3")
    p.add_argument("--background", type=float, help="letterbox and alpha background, 0..255 (default 0)")
    p.add_argument("--output-name", help="the members' output name (default: the ONNX files')")
    p.add_argument("--classes", type=int, help="class count (default: the members' output)")
    p.add_argument("--labels", help="class labels, comma-separated (default: the dataset's, else class-K)")
    p.add_argument("--labels-file", help="class labels, one per line")
    p.add_argument("--dataset", help="what the members were trained on (fashion-mnist, cifar10); recorded for evaluate")
    p.add_argument("--data-root", help="with --dataset: golden images and clean accuracy from its test set")
    p.add_argument("--test-limit", type=int, help="clean accuracy on the first N test images (default: all)")
    p.set_defaults(func=_import)
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
