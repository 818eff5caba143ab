"""Surface ``yaml``: cluster and device profiles (configs/clusters, configs/devices) as the user's
``--cluster FILE`` gives them to ``dnninfer partition``.

Documents start from every shipped file and are mutated structurally (key typos, dropped fields,
wrong types, nan/inf/negative/huge numbers, broken cross-references) or as text (garbage bytes,
truncation, invalid UTF-8, unsafe tags, deep nesting), or drawn at random with hypothesis. The
label of a structural edit comes from the pydantic schema itself (`slot_at`): the field's type,
whether it is required, its bounds; so the oracle follows the schema if the schema changes.
A device document runs inside a two-node wrapper cluster that names it by path.
"""

from __future__ import annotations

import copy
import math
import random
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnninfer.fuzz.classify import Case
from dnninfer.fuzz.drivers import run_cli
from dnninfer.fuzz.mutate import draw, mutate_bytes, rng_for, truncate, typo

__all__ = ["Slot", "cases", "slot_at", "value_label"]

SURFACE = "yaml"
HUGE = 1e15
#: (mutation kind, weight)
KINDS = (("bad_number", 25), ("wrong_type", 14), ("key_typo", 14), ("drop", 14), ("semantic", 10),
         ("text", 15), ("random_doc", 8))
WRAPPER = {"name": "fuzzwrap", "nodes": [{"name": "n1", "device": "dev.yaml"}, {"name": "n2", "device": "host1"}],
           "default_link": {"name": "l", "bandwidth_mbps": 100, "rtt_ms": 2, "energy_nj_per_bit": 0}}


@dataclass
class Slot:
    """What the schema expects at one place of a document."""

    base: Any  # float, int, str, bool, list, dict, a BaseModel subclass, or "literal"
    optional: bool = False
    bounds: dict[str, float] = field(default_factory=dict)  # gt / ge / lt / le
    min_length: int | None = None
    literal: tuple[Any, ...] = ()
    args: tuple[Any, ...] = ()


def _unwrap(ann: Any, meta: list[Any]) -> tuple[Any, list[Any], bool]:
    optional = False
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            meta = [*meta, *ann.__metadata__]
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(ann))
            ann = args[0] if len(args) == 1 else Any
        else:
            return ann, meta, optional


def _slot(ann: Any, meta: list[Any]) -> Slot:
    from pydantic import BaseModel

    ann, meta, optional = _unwrap(ann, meta)
    bounds = {k: getattr(m, k) for m in meta for k in ("gt", "ge", "lt", "le") if getattr(m, k, None) is not None}
    min_length = next((m.min_length for m in meta if getattr(m, "min_length", None) is not None), None)
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return Slot("literal", optional, literal=typing.get_args(ann))
    if origin in (list, dict):
        return Slot(origin, optional, bounds, min_length, args=typing.get_args(ann))
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return Slot(ann, optional)
    return Slot(ann, optional, bounds, min_length)


def slot_at(root: Any, path: tuple[Any, ...]) -> Slot | None:
    """The schema slot at ``path`` (keys and list indices) below model ``root``; None if unknown."""
    from pydantic import BaseModel

    slot = Slot(root)
    for part in path:
        base = slot.base
        if isinstance(base, type) and issubclass(base, BaseModel) and isinstance(part, str):
            f = base.model_fields.get(part)
            if f is None:
                return None
            slot = _slot(f.annotation, list(f.metadata))
        elif base is list and isinstance(part, int):
            slot = _slot(slot.args[0], [])
        elif base is dict and isinstance(part, str):
            slot = _slot(slot.args[1], [])
        else:
            return None
    return slot


def as_float(v: int | float) -> float:
    """`v` as a float; an int too large for one (10**400) becomes +-inf, as a parser would see it."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _number_label(slot: Slot, v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return "bad"
    b = slot.bounds
    if ("gt" in b and not v > b["gt"]) or ("ge" in b and not v >= b["ge"]) or \
            ("lt" in b and not v < b["lt"]) or ("le" in b and not v <= b["le"]):
        return "bad"
    return "maybe" if abs(v) >= HUGE or 0 < abs(v) < 1e-300 else "valid"


def value_label(slot: Slot | None, v: Any) -> str:
    """``bad`` / ``valid`` / ``maybe`` for value ``v`` placed in ``slot`` (by the schema's stated rules)."""
    from pydantic import BaseModel

    if slot is None:
        return "maybe"
    base = slot.base
    if v is None:
        return "valid" if slot.optional else "bad"
    if base == "literal":
        return "valid" if v in slot.literal else "bad"
    if isinstance(base, type) and issubclass(base, BaseModel):
        if not isinstance(v, dict):
            return "bad"
        missing = [k for k, f in base.model_fields.items() if f.is_required() and k not in v]
        return "bad" if missing or any(k not in base.model_fields for k in v) else "maybe"
    if base is list:
        if not isinstance(v, list):
            return "bad"
        return "bad" if slot.min_length and len(v) < slot.min_length else "maybe"
    if base is dict:
        return "maybe" if isinstance(v, dict) else "bad"
    if base is str:
        if not isinstance(v, str):
            return "bad"
        return "bad" if slot.min_length and len(v) < slot.min_length else "valid"
    if base in (int, float):
        if isinstance(v, bool):
            return "maybe"
        if isinstance(v, str):
            try:
                num = float(v)
            except ValueError:
                return "bad"
            return "bad" if _number_label(slot, num) == "bad" else "maybe"
        if not isinstance(v, (int, float)):
            return "bad"
        if base is int and isinstance(v, float):
            if math.isnan(v) or math.isinf(v) or not v.is_integer():
                return "bad"
            return "bad" if _number_label(slot, v) == "bad" else "maybe"
        return _number_label(slot, as_float(v))
    return "maybe"


# -- walking documents ------------------------------------------------------------------------------
def _walk(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _walk(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _walk(v, (*path, i))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _show(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


@dataclass
class _Doc:
    kind: str  # "cluster" | "device"
    name: str
    text: str
    data: dict[str, Any]

    @property
    def model(self) -> Any:
        from dnninfer.cost.profiles import Cluster, DeviceProfile

        return Cluster if self.kind == "cluster" else DeviceProfile


def _load_docs() -> list[_Doc]:
    from dnninfer.cost.profiles import configs_dir

    docs = []
    for kind in ("clusters", "devices"):
        for p in sorted((configs_dir() / kind).glob("*.yaml")):
            text = p.read_text(encoding="utf-8")
            docs.append(_Doc(kind[:-1], p.stem, text, yaml.safe_load(text)))
    return docs


# -- mutations: each returns (text bytes, label, description) -------------------------------------
Mutation = tuple[bytes, str, str]

NUMBERS: tuple[Any, ...] = (math.nan, math.inf, -math.inf, -1, -1e-9, 0, 0.0, 1e308, 10**30, 1.5, 2**63, -(10**30),
                            "1e3", "nan", True, None, 1e-320)
WRONG: tuple[Any, ...] = ("abc", "", [], {}, [1], {"a": 1}, None, True, 3, 2.5, [[]], "null")


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


def _leaves(doc: Any) -> list[tuple[Any, ...]]:
    return [p for p, v in _walk(doc) if p and not isinstance(v, (dict, list))]


def _m_bad_number(rng: random.Random, d: _Doc) -> Mutation:
    doc = copy.deepcopy(d.data)
    numeric = [p for p in _leaves(doc) if isinstance(_get(doc, p), (int, float)) and not isinstance(_get(doc, p), bool)]
    path = rng.choice(numeric or _leaves(doc))
    v = rng.choice(NUMBERS)
    _set(doc, path, v)
    return _dump(doc), value_label(slot_at(d.model, path), v), f"{_show(path)} := {v!r}"


def _m_wrong_type(rng: random.Random, d: _Doc) -> Mutation:
    doc = copy.deepcopy(d.data)
    path = rng.choice([p for p, _ in _walk(doc) if p])
    v = rng.choice(WRONG)
    _set(doc, path, copy.deepcopy(v))
    label = value_label(slot_at(d.model, path), v)
    # the right type but an arbitrary value: it may break a reference (a node or device name)
    return _dump(doc), "maybe" if label == "valid" else label, f"{_show(path)} := {v!r}"


def _dicts(doc: Any) -> list[tuple[Any, ...]]:
    return [p for p, v in _walk(doc) if isinstance(v, dict) and v]


def _known_kinds() -> frozenset[str]:
    from dnninfer.graph.flops import MODULE_RULES, NAME_RULES

    return frozenset({r.kind for r in NAME_RULES.values()} | {r.kind for _, r in MODULE_RULES})


def _m_key_typo(rng: random.Random, d: _Doc) -> Mutation:
    from pydantic import BaseModel

    doc = copy.deepcopy(d.data)
    path = rng.choice(_dicts(doc))
    node = _get(doc, path)
    key = rng.choice(list(node))
    new = typo(rng, str(key))
    if new in node:
        new = new + "_x"
    renamed = {(new if k == key else k): v for k, v in node.items()}
    if path:
        _set(doc, path, renamed)
    else:
        doc = renamed
    slot = slot_at(d.model, path)
    if slot is not None and isinstance(slot.base, type) and issubclass(slot.base, BaseModel):
        label = "bad"  # extra="forbid": an unknown key is an error (and a required one may go missing)
    elif slot is not None and slot.base is dict:  # op_speed: keys must be op kinds
        label = "maybe" if new in _known_kinds() else "bad"
    else:
        label = "maybe"
    return _dump(doc), label, f"key {_show((*path, key))} renamed {new!r}"


def _m_drop(rng: random.Random, d: _Doc) -> Mutation:
    from pydantic import BaseModel

    doc = copy.deepcopy(d.data)
    containers = [p for p, v in _walk(doc) if isinstance(v, (dict, list)) and v]
    path = rng.choice(containers)
    node = _get(doc, path)
    slot = slot_at(d.model, path)
    if isinstance(node, dict):
        key = rng.choice(list(node))
        del node[key]
        if slot is not None and isinstance(slot.base, type) and issubclass(slot.base, BaseModel):
            f = slot.base.model_fields.get(key)
            label = "bad" if f is not None and f.is_required() else "maybe"
        else:
            label = "maybe"
        return _dump(doc), label, f"dropped field {_show((*path, key))}"
    i = rng.randrange(len(node))
    gone = node.pop(i)
    label = "bad" if slot is not None and slot.min_length and len(node) < slot.min_length else "maybe"
    if d.kind == "cluster" and path == ("nodes",) and isinstance(gone, dict):  # a link may name it
        used = {e for spec in doc.get("links") or [] if isinstance(spec, dict) for e in (spec.get("a"), spec.get("b"))}
        label = "bad" if gone.get("name") in used else label
    return _dump(doc), label, f"dropped item {_show((*path, i))}"


def _m_semantic(rng: random.Random, d: _Doc) -> Mutation:
    doc = copy.deepcopy(d.data)
    if d.kind == "cluster":
        nodes = doc["nodes"]
        ops = ["dup_node", "unknown_device", "missing_device_file", "no_nodes", "empty_name"]
        if len(nodes) >= 2:
            ops += ["link_unknown", "self_link", "dup_link"]
        op = rng.choice(ops)
        if op == "dup_node":
            nodes.append(copy.deepcopy(rng.choice(nodes)))
        elif op == "unknown_device":
            rng.choice(nodes)["device"] = rng.choice(["rpi5", "jetson", "RPI4", "rpi4 ", "nosuchboard"])
        elif op == "missing_device_file":
            rng.choice(nodes)["device"] = "does/not/exist.yaml"
        elif op == "no_nodes":
            doc["nodes"] = []
        elif op == "empty_name":
            rng.choice(nodes)["name"] = ""
        else:
            link = {"name": "x", "bandwidth_mbps": 10, "rtt_ms": 1, "energy_nj_per_bit": 0}
            a, b = (n["name"] for n in rng.sample(nodes, 2))
            spec = {"link_unknown": {"a": a, "b": "ghost", "link": link},
                    "self_link": {"a": a, "b": a, "link": link}}.get(op, {"a": a, "b": b, "link": link})
            doc["links"] = [*(doc.get("links") or []), spec]
            if op == "dup_link":
                doc["links"].append({"a": b, "b": a, "link": link})
        return _dump(doc), "bad", f"cluster rule broken: {op}"
    pus = doc["pus"]
    op = rng.choice(["dup_pu", "no_pus", "kind_typo", "unknown_op_kind", "empty_pu_name"])
    if op == "dup_pu":
        pus.append(copy.deepcopy(rng.choice(pus)))
    elif op == "no_pus":
        doc["pus"] = []
    elif op == "kind_typo":
        rng.choice(pus)["kind"] = rng.choice(["tpu", "CPU", "gpu ", "dsp", ""])
    elif op == "unknown_op_kind":
        rng.choice(pus).setdefault("op_speed", {})["warp_drive"] = 2.0
    else:
        rng.choice(pus)["name"] = ""
    return _dump(doc), "bad", f"device rule broken: {op}"


def _m_text(rng: random.Random, d: _Doc) -> Mutation:
    raw = d.text.encode("utf-8")
    op = rng.choice(["bytes", "bytes", "truncate", "utf8", "tag", "tabs", "toplevel", "empty", "nesting",
                     "dup_key"])
    if op == "bytes":
        out, note = mutate_bytes(rng, raw, rng.randrange(1, 4))
        return out, "maybe", f"text edit: {note}"
    if op == "truncate":
        out, note = truncate(rng, raw)
        return out, "maybe", note
    if op == "utf8":
        i = rng.randrange(len(raw))
        return raw[:i] + b"\xff\xfe\xc3" + raw[i:], "bad", f"invalid UTF-8 bytes inserted at {i}"
    if op == "tag":
        return raw + b"\nexploit: !!python/object/apply:os.getcwd []\n", "bad", "unsafe python tag appended"
    if op == "tabs":
        return raw.replace(b"  ", b"\t"), "maybe", "indentation spaces replaced by tabs"
    if op == "toplevel":
        v = rng.choice([b"- a\n- b\n", b"42\n", b"just a string\n", b"null\n", b"[]\n"])
        return v, "bad", f"top level is not a mapping: {v!r}"
    if op == "empty":
        return rng.choice([b"", b"\n", b"# only a comment\n", b"---\n"]), "bad", "empty document"
    if op == "nesting":
        depth = rng.choice([50, 2000, 20000])
        return b"name: " + b"[" * depth + b"]" * depth + b"\n", "bad", f"name nested {depth} lists deep"
    key = rng.choice([k for k in d.data])
    return raw + f"\n{key}: {d.data[key]!r}\n".encode(), "maybe", f"duplicate key {key!r} appended"


def _m_random_doc(rng: random.Random, d: _Doc, pool: list[Any]) -> Mutation:
    doc = pool[rng.randrange(len(pool))] if pool else {}
    if isinstance(doc, dict):
        missing = [k for k, f in d.model.model_fields.items() if f.is_required() and k not in doc]
        label = "bad" if missing else "maybe"
    else:
        label = "bad"
    try:
        text = _dump(doc)
    except yaml.YAMLError:
        text = repr(doc).encode()
    return text, label, f"random document (hypothesis): {str(doc)[:80]}"


def _random_docs(seed: int, n: int) -> list[Any]:
    from hypothesis import strategies as st

    from dnninfer.cost.profiles import Cluster, DeviceProfile, LinkProfile, LinkSpec, NodeSpec, ProcessingUnit

    names = sorted({k for m in (Cluster, DeviceProfile, LinkProfile, LinkSpec, NodeSpec, ProcessingUnit)
                    for k in m.model_fields})
    scalars = (st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats()
               | st.text(max_size=10) | st.sampled_from(["cpu", "gpu", "host", "rpi4", "n1"]))
    keys = st.sampled_from(names) | st.text(max_size=8)
    docs = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=6),
                        max_leaves=16)
    return draw(st.dictionaries(keys, docs, max_size=8) | docs, max(4, n), seed)


def cases(n: int, seed: int, work: Path) -> Iterator[Case]:
    """``n`` mutated cluster/device documents, plus every shipped file unmodified (label valid)."""
    rng = rng_for(seed, SURFACE)
    docs = _load_docs()
    folder = work / "yaml"
    folder.mkdir(parents=True, exist_ok=True)
    pool = _random_docs(seed, max(4, n // 10))
    names, weights = zip(*KINDS, strict=True)
    fns = {"bad_number": _m_bad_number, "wrong_type": _m_wrong_type, "key_typo": _m_key_typo, "drop": _m_drop,
           "semantic": _m_semantic, "text": _m_text}
    for i in range(n):
        d = docs[i % len(docs)] if i < len(docs) else rng.choice(docs)
        if i < len(docs):
            kind, (text, label, what) = "unmodified", (d.text.encode("utf-8"), "valid", "shipped file, unmodified")
        else:
            kind = rng.choices(names, weights)[0]
            text, label, what = _m_random_doc(rng, d, pool) if kind == "random_doc" else fns[kind](rng, d)
        yield Case(SURFACE, f"{d.kind}:{kind}", label, f"{d.kind} {d.name}: {what}",
                   lambda text=text, d=d: _run(folder, d.kind, text, work),
                   preview=text[:120].decode("utf-8", "replace"))


def _run(folder: Path, kind: str, text: bytes, work: Path) -> Any:
    target = folder / ("cluster.yaml" if kind == "cluster" else "dev.yaml")
    target.write_bytes(text)
    cluster = target
    if kind == "device":
        cluster = folder / "wrapper.yaml"
        cluster.write_text(yaml.safe_dump(WRAPPER, sort_keys=False), encoding="utf-8")
    return run_cli(["partition", "digits_mlp", "--cluster", str(cluster), "--host-estimate", "flops", "--json"], work)
