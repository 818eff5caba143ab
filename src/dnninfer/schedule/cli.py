"""`dnninfer schedule MODEL`: plan a model's operators onto streams, run the plan, check it.

Plans with the chosen allocation and launch order, prints the plan (streams, cross-stream edges,
events and waits of the launch program), runs it on CPU lanes or as one CUDA Graph, and reports
the largest difference from eager PyTorch on fresh inputs plus a short timing against eager.
"""

from __future__ import annotations

import argparse
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit, stdout
from dnninfer.errors import UserError


def add_commands(sub: Any) -> None:
    from dnninfer.schedule.plan import ALGOS, ORDERS

    p = sub.add_parser("schedule", help="plan a model onto streams (Opara, Nimble, ...) and run the plan")
    p.add_argument("model", help="zoo name, nasnet_cells, path/model.py[:factory], model.onnx, model.pt2 "
                                 "(or, with --trust-pickle, a pickled model.pt)")
    p.add_argument("--algo", choices=ALGOS, default="opara", help="stream allocation (default opara)")
    p.add_argument("--order", choices=ORDERS, default="opara", help="launch order (default opara)")
    p.add_argument("--max-streams", type=at.positive_int, default=None,
                   help="cap on streams (default: none on cuda, 2 lanes on cpu)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=at.threads, default=1, help="intra-op threads per CPU lane")
    p.add_argument("--batch", type=at.batch, default=1)
    p.add_argument("--seed", type=at.seed, default=0)
    p.add_argument("--input-shape", type=at.input_shape, help="input shape for a user model file, e.g. 1,3,224,224")
    p.add_argument("--weights", metavar="FILE", default=None, help="state_dict for a zoo model or model.py factory")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled whole-module .pt (unpickling runs the file's code: trusted files only)")
    p.add_argument("--repeats", type=at.bounded_int(0, 10_000), default=5,
                   help="timed runs of eager and the plan (0: no timing)")
    p.add_argument("--no-profile", action="store_true", help="estimate operator costs instead of measuring them")
    p.add_argument("--show-program", action="store_true", help="include the launch program (run/record/wait)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_schedule)


def _load(args: argparse.Namespace) -> tuple[str, Any, tuple[Any, ...]]:
    from dnninfer.zoo import load_model

    if args.batch < 1:
        raise UserError(f"--batch: expected a positive integer, got {args.batch}")
    loaded = load_model(args.model, input_shape=args.input_shape, batch=args.batch, seed=args.seed,
                        weights=args.weights, trust_pickle=args.trust_pickle)
    return loaded.name, loaded.model, loaded.inputs


def _fresh_like(inputs: tuple[Any, ...], seed: int) -> tuple[Any, ...]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in inputs:
        if x.dtype.is_floating_point:
            out.append(torch.randn(x.shape, generator=gen, dtype=x.dtype))
        else:  # ids: reuse the example's range so embeddings stay in bounds
            hi = max(int(x.max()) + 1, 1)
            out.append(torch.randint(0, hi, x.shape, generator=gen, dtype=x.dtype))
    return tuple(out)


def cmd_schedule(args: argparse.Namespace) -> None:
    import torch

    from dnninfer.bench.harness import compare
    from dnninfer.graph import capture, max_abs_diff
    from dnninfer.schedule.dag import OpDAG
    from dnninfer.schedule.plan import make_plan
    from dnninfer.schedule.program import build_program

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device cuda: expected a CUDA device, but torch {torch.__version__} sees none; "
                        "use --device cpu")
    name, model, inputs = _load(args)
    g = capture(model, inputs, name=name)
    if args.no_profile:
        node_s, cost_source = None, "roofline estimate"
    elif args.device == "cuda":
        from dnninfer.schedule.cuda import cuda_node_profile

        node_s, cost_source = cuda_node_profile(g), "measured on cuda"
    else:
        from dnninfer.cost.measure import profile

        node_s, cost_source = profile(g, threads=1, warmup=1, repeats=3).node_s, "measured on cpu (1 thread)"
    dag = OpDAG.from_graph(g, node_s)
    cap = args.max_streams if args.max_streams is not None else (2 if args.device == "cpu" else None)
    plan = make_plan(dag, args.algo, args.order, max_streams=cap)
    program = build_program(plan, dag)
    fresh = _fresh_like(inputs, args.seed + 1)
    with torch.no_grad():
        if args.device == "cuda":
            from dnninfer.schedule.cuda import CudaStreamGraph

            model = model.cuda()
            inputs = tuple(x.cuda() for x in inputs)
            fresh = tuple(x.cuda() for x in fresh)
            runner: Any = CudaStreamGraph(g, plan, dag, inputs=inputs)
        else:
            from dnninfer.schedule.lanes import LaneExecutor

            runner = LaneExecutor(g, plan, dag, intra_threads=args.threads)
        ref = model(*fresh)
        out = runner(*fresh)
    err = max_abs_diff(out, ref)
    timing = None
    if args.repeats > 0:
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

        def eager() -> Any:
            with torch.no_grad():
                out = model(*inputs)
            sync()  # host timing of asynchronous CUDA work must wait for it
            return out

        def ours() -> Any:
            with torch.no_grad():
                out = runner(*inputs)
            sync()
            return out

        t = compare({"eager": eager, "plan": ours}, warmup=2, repeats=args.repeats, seed=args.seed, progress=False)
        timing = {"eager_ms": t["eager"].median * 1e3, "plan_ms": t["plan"].median * 1e3,
                  "speedup": t["eager"].median / t["plan"].median,
                  "note": "host wall clock, interleaved; use `dnninfer bench opara` for the full protocol"}
    if hasattr(runner, "close"):
        runner.close()
    streams = [{"stream": i, "ops": len(ops), "cost_ms": sum(dag.cost_s[n] for n in ops) * 1e3,
                "first": ops[0], "last": ops[-1]} for i, ops in enumerate(plan.streams)]
    obj: dict[str, Any] = {
        "model": name, "device": args.device, "algo": args.algo, "order": args.order, "max_streams": cap,
        "nodes": len(dag), "streams_used": plan.num_streams, "cross_edges": len(plan.cross_edges),
        "program": program.counts(), "costs": cost_source, "max_abs_err": err, "equal": err <= 1e-4,
        "timing": timing, "streams": streams,
    }
    if args.show_program:
        obj["launch_program"] = program.lines()
    if args.json:
        emit(args, obj, "")
        return
    emit(args, obj, f"{name}: {args.algo} streams, {args.order} order on {args.device}", streams)
    summary = (f"{plan.num_streams} streams, {len(plan.cross_edges)} cross-stream edges, "
               f"{program.counts()['waits']} waits; max |plan - eager| = {err:.2e}")
    if timing:
        summary += f"; eager {timing['eager_ms']:.2f} ms, plan {timing['plan_ms']:.2f} ms"
    stdout().print(summary, markup=False)
    if args.show_program:
        stdout().print("\n".join(program.lines()), markup=False)
