"""`dnninfer cbnet train`: train the full DNN, BranchyNet and CBNet on one dataset and report
test accuracy, exit shares and MACs (no timing; `dnninfer bench cbnet` times them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit


def add_commands(sub: Any) -> None:
    p = sub.add_parser("cbnet", help="CBNet: converting autoencoder + light classifier vs BranchyNet")
    csub = p.add_subparsers(dest="cbnet_command", required=True, parser_class=type(p))
    t = csub.add_parser("train", help="train full DNN, BranchyNet and CBNet; report accuracy, exits, MACs")
    t.add_argument("--dataset", default="digits", help="digits, or mnist / fashion_mnist / kmnist (needs --data-dir)")
    t.add_argument("--data-dir", default=None, help="directory with the four MNIST-format IDX files (.gz or plain)")
    t.add_argument("--backbone", default="blenet",
                   help="blenet (the paper's B-LeNet), bcnn (multi-exit digits_cnn), balexnet (half-width B-AlexNet)")
    t.add_argument("--epochs", type=at.bounded_int(1, 10_000), default=30,
                   help="epochs for the full DNN and for joint BranchyNet training")
    t.add_argument("--ae-epochs", type=at.bounded_int(1, 10_000), default=None,
                   help="autoencoder epochs (default: 2 x --epochs)")
    t.add_argument("--threshold", type=at.positive_float, default=None,
                   help="exit-1 entropy threshold T in nats (default: the --easy-fraction quantile on training data)")
    t.add_argument("--easy-fraction", type=at.positive_float, default=0.8,
                   help="share of training images exit 1 should take, in (0, 1)")
    t.add_argument("--targets", default="easiest", choices=["easiest", "kmeans"],
                   help="one easiest image per class (paper) or k-means representatives (CAE-Net)")
    t.add_argument("--clusters", type=at.bounded_int(1, 1000), default=3, help="k for --targets kmeans")
    t.add_argument("--autoencoders", default="dense,conv", help="comma list of dense, dense_mnist, conv, dense_small")
    t.add_argument("--image-size", type=at.bounded_int(4, 1024), default=None,
                   help="resize images (default: 28 for blenet and balexnet)")
    t.add_argument("--train-limit", type=at.positive_int, default=None)
    t.add_argument("--test-limit", type=at.positive_int, default=None)
    t.add_argument("--seed", type=at.seed, default=0)
    t.add_argument("--save", type=Path, default=None, help="write the trained models' state dicts to this .pt file")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from dnninfer.adaptive.measure import methods
    from dnninfer.adaptive.pipeline import CBNetConfig, fit, load_split, summary
    from dnninfer.bench.output import err_console

    cfg = CBNetConfig(dataset=args.dataset, data_dir=args.data_dir, backbone=args.backbone, image_size=args.image_size,
                      epochs=args.epochs, ae_epochs=args.ae_epochs or 2 * args.epochs, threshold=args.threshold,
                      easy_fraction=args.easy_fraction, targets=args.targets, clusters=args.clusters,
                      autoencoders=tuple(a.strip() for a in args.autoencoders.split(",") if a.strip()),
                      train_limit=args.train_limit, test_limit=args.test_limit, ae_lr=3e-3, seed=args.seed)
    split = load_split(cfg)  # a bad dataset or directory fails here, before any training
    trained = fit(cfg, split, log=lambda msg: err_console.log(msg))
    facts = summary(trained)
    ms = methods(trained)
    facts["macs_per_image"] = {k: m.macs_per_image for k, m in ms.items() if not k.startswith("bnet_")}
    facts["config"] = cfg.to_dict()
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": cfg.to_dict(), "threshold": trained.threshold, "full": trained.full.state_dict(),
                    "branchynet": trained.bnet.state_dict(),
                    "autoencoders": {k: ae.state_dict() for k, ae in trained.autoencoders.items()},
                    "target_indices": trained.targets.index}, args.save)
        facts["saved"] = str(args.save)
    rows = [{"method": k, "accuracy": acc, "macs_per_image": facts["macs_per_image"].get(k)}
            for k, acc in facts["accuracy"].items()]
    emit(args, facts, f"{facts['dataset']} {facts['image_shape']}: T = {facts['threshold']:.4g} nats, "
         f"BranchyNet exit-1 share {facts['branchynet_exit1_fraction']:.0%}", rows, ["method", "accuracy",
                                                                                     "macs_per_image"])
