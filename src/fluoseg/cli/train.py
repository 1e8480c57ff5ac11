"""``fluoseg train``: train a model from a YAML config into a run directory."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train the network(s) a run configuration describes. The run directory gets the "
                       "resolved config, train.log, and per network best.pt, last.pt and metrics.csv.")
    p.add_argument("config", help="run configuration (YAML)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _args.add_overwrite(p, "an existing run directory")
    p.add_argument("--epochs", type=_args.positive_int, help="override train.epochs")
    p.add_argument("--nproc", type=_args.positive_int, default=1, metavar="N",
                   help="train data-parallel in N processes (torch.distributed: gloo on CPU, NCCL with one GPU per "
                   "process); train.batch_size is the global batch, shared out evenly; rank 0 writes the run. "
                   "Under torchrun leave it out: 'torchrun --nproc-per-node N -m fluoseg train ...' works too")
    p.add_argument("--tune", action="store_true", help="instance runs: after training, tune the decoding on the "
                   "validation images and store it in the run (as 'fluoseg tune RUN' does)")
    _args.add_device(p)
    _args.add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from fluoseg.config import load_config
    from fluoseg.train.trainer import train

    config = load_config(args.config)
    if args.tune and config.task != "instance":
        from fluoseg.errors import FluosegError

        raise FluosegError(f"--tune tunes instance decoding, but this config's task is {config.task}; leave it out",
                           path=args.config)
    if args.device != "auto":
        config.train.device = args.device
    if args.epochs is not None:
        config.train.epochs = args.epochs
    run_dir = train(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                    nproc=args.nproc)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports and tunes
        return 0
    print(f"trained: {run_dir}")
    if args.tune:
        from fluoseg.tuning import tune_run

        tune_run(run_dir, device=args.device)
    return 0
