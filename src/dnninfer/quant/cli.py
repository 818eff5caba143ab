"""`dnninfer quant train`: quantisation-aware training of a small model, accuracy and non-zeros.

``--deploy`` also lowers the trained model to the add-only kernels and reports the deployed
accuracy, the largest difference from the PyTorch forward and the packed weight bytes.
"""

from __future__ import annotations

import argparse
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit


def add_commands(sub: Any) -> None:
    from dnninfer.data.datasets import MNIST_FAMILY
    from dnninfer.quant.quantizers import FIRST_LAST, METHODS

    p = sub.add_parser("quant", help="signed binarization (PLUM) and binary/ternary QAT")
    qsub = p.add_subparsers(dest="quant_command", required=True, parser_class=type(p))
    t = qsub.add_parser("train", help="train a quantised MLP/CNN on digits or MNIST-family IDX files")
    t.add_argument("--method", required=True, help=f"weight quantiser: {', '.join(METHODS)}")
    t.add_argument("--width", type=at.bounded_float(1e-3, 64.0), default=1.0,
                   help="width multiplier (MLP: 16 x width hidden units)")
    t.add_argument("--arch", default="mlp", help="mlp, cnn or resnet (conv nets are 1-D on mnist1d)")
    t.add_argument("--epochs", type=at.positive_int, default=30)
    t.add_argument("--seed", type=at.seed, default=0)
    t.add_argument("--batch-size", type=at.positive_int, default=64)
    t.add_argument("--lr", type=at.positive_float, default=2e-3)
    t.add_argument("--first-last", default=None, choices=list(FIRST_LAST),
                   help="policy for the first and last layer (default: mlp quantises the first, keeps the last fp32; "
                        "cnn keeps both fp32)")
    t.add_argument("--dataset", default="digits", help=f"digits or one of {', '.join(MNIST_FAMILY)} (with --data-dir)")
    t.add_argument("--data-dir", default=None, help="directory with the four MNIST-format IDX files")
    t.add_argument("--deploy", action="store_true", help="also run the model on the add-only kernels and compare")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from dnninfer.data import load_dataset
    from dnninfer.quant.train import TrainConfig, train

    cfg = TrainConfig(method=args.method, arch=args.arch, width=args.width, epochs=args.epochs, seed=args.seed,
                      batch_size=args.batch_size, lr=args.lr, first=args.first_last, last=args.first_last,
                      dataset=args.dataset, data_dir=args.data_dir)
    cfg.validate()  # a bad method/width fails before any data is read
    split = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)
    result = train(cfg, split)
    obj: dict[str, Any] = result.to_dict()
    if args.deploy:
        from dnninfer.quant.engine import deploy

        model = result.model
        assert model is not None
        model.eval()
        with torch.no_grad():
            ref = model(split.test_x).numpy()
        deployed = deploy(model)
        y = deployed(split.test_x)
        obj["deploy"] = {"accuracy": float((y.argmax(1) == split.test_y.numpy()).mean()),
                         "max_abs_err": float(np.abs(y - ref).max()), "weight_bytes": deployed.weight_bytes,
                         "ops": deployed.summary()}
    summary = {k: obj[k] for k in ("method", "arch", "width", "epochs", "seed", "accuracy", "nnz", "weights",
                                   "density", "nnz_all", "train_s")}
    if "deploy" in obj:
        summary |= {"deploy_accuracy": obj["deploy"]["accuracy"], "deploy_max_abs_err": obj["deploy"]["max_abs_err"]}
    if args.json:
        emit(args, obj, "")
    else:
        emit(args, summary, f"quant train: {cfg.method} {cfg.arch} x{cfg.width:g} on {split.name}")
        emit(args, {}, "layers", result.layers)
