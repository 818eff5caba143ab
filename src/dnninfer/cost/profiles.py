"""Device, link and cluster profiles: the hardware a plan is costed on, read from YAML.

A `DeviceProfile` lists a board's processing units (PUs: CPU clusters, GPU, NPU) with a speed
relative to ONE core of the host this toolkit runs on, plus the power figures of the energy model
(docs: research/partitioning.md §5.5). A `Cluster` names nodes (each a device profile) and the
links between them. Every number in the shipped YAML carries its source; the speed ratios are
derived from published single-thread latencies of the same models, divided into our host's.

Configs are validated once, at load time (pydantic, ``extra="forbid"``, no nan/inf); any mistake
in a file is a `UserError` with one line naming the file, the field path and what was expected, e.g.
``cluster configs/clusters/x.yaml: links.0.link.bandwidth_mbps: expected a number > 0, got -5``.
An unknown key is reported before anything else, with the nearest valid name: a typo'd key also
leaves its field missing, and "missing bandwidth_mbps" would hide the real mistake.

Units: bandwidth in Mbit/s (10^6 bit/s, as `tc` reads "mbit"), RTT and jitter in ms, power in W,
link energy in nJ per bit, memory in MB.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dnninfer.errors import UserError

__all__ = [
    "Cluster",
    "DeviceProfile",
    "LinkProfile",
    "LinkSpec",
    "NodeSpec",
    "ProcessingUnit",
    "configs_dir",
    "list_clusters",
    "list_devices",
    "load_cluster",
    "load_device",
]

CONFIGS_ENV = "DNNINFER_CONFIGS"


#: Op kinds the FLOPs table (graph/flops.py) can produce: the keys `op_speed` may use. Written out
#: so that reading a profile never imports torch (graph/ does); tests/cost/test_op_kinds.py checks
#: it against the table.
OP_KINDS = frozenset({
    "act", "add", "attention", "bn", "cat", "conv", "dropout", "embedding", "getitem", "identity", "linear",
    "matmul", "mul", "norm", "pool", "reduce", "reshape", "resize", "shape", "softmax",
})


def _known_kinds() -> frozenset[str]:
    """Op kinds the FLOPs table can produce: the keys `op_speed` may use."""
    return OP_KINDS



def _require_unique(names: list[str], what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique, got {', '.join(dupes)} more than once")

class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProcessingUnit(_Config):
    """One processing unit of a device: a CPU cluster, a GPU or an NPU.

    `speed` is the throughput of ONE execution lane of this PU relative to ONE core of the host
    (host core = 1.0) on the reference op mix (CNN inference, fp32, batch 1). A lane is one core
    of a CPU cluster (one intra-op thread, as the emulation runs, partitioning.md §5.1) and the
    whole accelerator for a GPU/NPU. `op_speed` multiplies `speed` per op kind, for PUs whose
    advantage differs by op (a GPU gains on conv/matmul, loses on tiny reshape-like kernels).

    Power (partitioning.md §5.5): `p_active_w` is the draw above board idle while the PU is busy
    (all its cores loaded, as `stress`/7-zip measure it); `p_idle_w` the extra draw above board
    idle while it is powered but idle (0 when the board-idle figure already includes it).
    """

    name: str = Field(min_length=1)
    kind: Literal["cpu", "gpu", "npu"]
    cores: int = Field(ge=1)
    freq_ghz: float | None = Field(default=None, gt=0)
    speed: float = Field(gt=0)
    op_speed: dict[str, PositiveFloat] = Field(default_factory=dict)
    p_active_w: float = Field(ge=0)
    p_idle_w: float = Field(default=0.0, ge=0)
    parallel_fraction: float = Field(default=0.84, gt=0, le=1)

    @field_validator("op_speed")
    @classmethod
    def _known_op_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - _known_kinds())
        if unknown:
            raise ValueError(
                f"op kind(s) {', '.join(unknown)} unknown; expected kinds from dnninfer.graph.flops: "
                f"{', '.join(sorted(_known_kinds()))}"
            )
        return value

    def speed_for(self, kind: str) -> float:
        """Lane speed for one op kind: `speed * op_speed.get(kind, 1.0)`."""
        return self.speed * self.op_speed.get(kind, 1.0)

    @property
    def lanes(self) -> int:
        """Execution lanes: one per core of a CPU cluster, one for a whole accelerator."""
        return self.cores if self.kind == "cpu" else 1

    def scaling(self, lanes: int | None = None) -> float:
        """Speedup of `lanes` lanes over one, by Amdahl's law with `parallel_fraction`.

        The default 0.84 fits ncnn's 4-thread speedups on the Jetson Nano's A57s (2.66x resnet18,
        2.78x mobilenet_v2; jetson_nano.yaml): 1 / (0.16 + 0.84/4) = 2.70.
        """
        n = self.lanes if lanes is None else lanes
        if not 1 <= n <= self.lanes:
            raise ValueError(f"PU {self.name!r}: lanes must be in 1..{self.lanes}, got {n}")
        return 1.0 / ((1.0 - self.parallel_fraction) + self.parallel_fraction / n)

    def rate(self, kind: str, lanes: int | None = None) -> float:
        """Throughput relative to one host core for one op kind, using `lanes` lanes (all by default)."""
        return self.speed_for(kind) * self.scaling(lanes)


class DeviceProfile(_Config):
    """A board: its PUs, idle power and memory, with the sources of every figure."""

    name: str = Field(min_length=1)
    description: str = ""
    pus: list[ProcessingUnit] = Field(min_length=1)
    p_board_idle_w: float = Field(ge=0)
    memory_mb: int = Field(gt=0)
    sources: list[str] = Field(default_factory=list)
    notes: str | None = None

    @field_validator("pus")
    @classmethod
    def _unique_pu_names(cls, pus: list[ProcessingUnit]) -> list[ProcessingUnit]:
        _require_unique([p.name for p in pus], "PU")
        return pus

    @property
    def fastest_pu(self) -> ProcessingUnit:
        """The PU with the highest lane speed (first on ties): the default for `predict`."""
        return max(self.pus, key=lambda p: p.speed)

    @property
    def default_pu(self) -> ProcessingUnit:
        """The PU a stock framework would run on: the highest all-lanes throughput (first on ties).

        HiDP's premise: default inference frameworks use one PU and leave the rest idle.
        """
        return max(self.pus, key=lambda p: p.speed * p.scaling())

    def pu(self, name: str | None = None) -> ProcessingUnit:
        """The PU called `name`; the fastest when `name` is None."""
        if name is None:
            return self.fastest_pu
        for p in self.pus:
            if p.name == name:
                return p
        raise UserError(
            f"device {self.name!r}: PU {name!r}: expected one of {', '.join(p.name for p in self.pus)}"
        )


class LinkProfile(_Config):
    """A network link as the runtime emulates it: half the RTT plus serialisation time.

    `jitter_ms` is the delay spread an emulator may add; the cost model uses the mean delay.
    """

    name: str = Field(min_length=1)
    bandwidth_mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    energy_nj_per_bit: float = Field(ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)

    def transfer_s(self, nbytes: float) -> float:
        """Seconds to move `nbytes` one way: ``rtt/2 + bytes*8/bandwidth`` (partitioning.md §6.1)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        return self.rtt_ms / 2e3 + nbytes * 8 / (self.bandwidth_mbps * 1e6)

    def energy_j(self, nbytes: float) -> float:
        """Joules to move `nbytes`: ``energy_nj_per_bit * bits``."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        return self.energy_nj_per_bit * 1e-9 * nbytes * 8


class NodeSpec(_Config):
    """A node of a cluster: a name and the device profile it runs (a name in configs/devices or a path)."""

    name: str = Field(min_length=1)
    device: str = Field(min_length=1)


class LinkSpec(_Config):
    """The (symmetric) link between nodes `a` and `b`."""

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    link: LinkProfile


class Cluster(_Config):
    """Nodes and the links between them; pairs without an explicit link use `default_link`."""

    name: str = Field(min_length=1)
    description: str = ""
    nodes: list[NodeSpec] = Field(min_length=1)
    links: list[LinkSpec] = Field(default_factory=list)
    default_link: LinkProfile | None = None

    _base_dir: Path | None = PrivateAttr(default=None)
    _devices: dict[str, DeviceProfile] = PrivateAttr(default_factory=dict)

    @field_validator("nodes")
    @classmethod
    def _unique_node_names(cls, nodes: list[NodeSpec]) -> list[NodeSpec]:
        _require_unique([n.name for n in nodes], "node")
        return nodes

    @model_validator(mode="after")
    def _check_links(self) -> Cluster:
        names = [n.name for n in self.nodes]
        known = set(names)
        seen: set[frozenset[str]] = set()
        for i, spec in enumerate(self.links):
            for end in (spec.a, spec.b):
                if end not in known:
                    raise ValueError(
                        f"links.{i}: node {end!r} is not in nodes; expected one of {', '.join(names)}"
                    )
            if spec.a == spec.b:
                raise ValueError(f"links.{i}: a link needs two different nodes, got {spec.a!r} twice")
            pair = frozenset((spec.a, spec.b))
            if pair in seen:
                raise ValueError(f"links.{i}: a second link between {spec.a!r} and {spec.b!r}")
            seen.add(pair)
        return self

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def _node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise UserError(f"cluster {self.name!r}: node {name!r}: expected one of {', '.join(self.node_names)}")

    def link(self, a: str, b: str) -> LinkProfile:
        """The link between two different nodes (either order); `default_link` if none is listed."""
        self._node(a)
        self._node(b)
        if a == b:
            raise ValueError(f"link({a!r}, {b!r}): a node needs no link to itself; use transfer_s, which is 0")
        for spec in self.links:
            if {spec.a, spec.b} == {a, b}:
                return spec.link
        if self.default_link is None:
            raise UserError(
                f"cluster {self.name!r}: link {a!r}-{b!r}: expected a listed link or a default_link, got neither"
            )
        return self.default_link

    def transfer_s(self, a: str, b: str, nbytes: float) -> float:
        """Seconds to move `nbytes` from node a to b; 0 on the same node."""
        return 0.0 if a == b else self.link(a, b).transfer_s(nbytes)

    def link_map(self) -> dict[tuple[str, str], LinkProfile]:
        """Every ordered pair of distinct nodes that has a link, for the runtimes' link emulation."""
        out: dict[tuple[str, str], LinkProfile] = {}
        for a in self.node_names:
            for b in self.node_names:
                if a == b:
                    continue
                try:
                    out[(a, b)] = self.link(a, b)
                except UserError:
                    continue
        return out

    def device(self, node_name: str) -> DeviceProfile:
        """The device profile of a node, loaded once (paths are relative to the cluster file)."""
        if node_name not in self._devices:
            spec = self._node(node_name)
            self._devices[node_name] = load_device(spec.device, base_dir=self._base_dir)
        return self._devices[node_name]

    def devices(self) -> dict[str, DeviceProfile]:
        """Node name -> resolved device profile, for every node."""
        return {n: self.device(n) for n in self.node_names}


# -- loading ---------------------------------------------------------------------------------------


def configs_dir() -> Path:
    """The configs folder: ``$DNNINFER_CONFIGS`` if set, else ``<repo>/configs``."""
    env = os.environ.get(CONFIGS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "configs"


def _display(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 50, 50


def _short(value: Any, limit: int = 60) -> str:
    """A bounded repr: YAML anchors can make a tiny file hold a huge or deeply nested value."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


def _model_at(model: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config class that validates the mapping at `path` of a document of `model` (None if unknown)."""
    tp: Any = model
    for part in (*path, None):
        while True:  # peel Optional / Union / Annotated down to a model or container
            origin = typing.get_origin(tp)
            if origin in (typing.Union, types.UnionType):
                args = [a for a in typing.get_args(tp) if a is not type(None)]
                if len(args) != 1:
                    return None
                tp = args[0]
            elif origin is typing.Annotated:
                tp = typing.get_args(tp)[0]
            else:
                break
        if part is None:
            break
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if isinstance(part, int) and origin is list and args:
            tp = args[0]
        elif origin is dict and len(args) == 2:
            tp = args[1]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unknown_key(err: Mapping[str, Any], model: Any) -> str:
    """``<where>: unknown key 'bandwith_mbps' (did you mean 'bandwidth_mbps'?)``."""
    loc = tuple(err.get("loc", ()))
    key = loc[-1] if loc else "?"
    where = ".".join(str(p) for p in loc[:-1]) or "(top level)"
    cls = _model_at(model, loc[:-1]) if model is not None else None
    valid = list(cls.model_fields) if cls is not None else []
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif valid:
        hint = f"expected one of {', '.join(valid)}"
    else:
        hint = "check the spelling"
    return f"{where}: unknown key {_short(key)} ({hint})"


def _describe(err: Mapping[str, Any], model: Any = None) -> str:
    """One pydantic error as ``<field path>: expected <what>, got <value>``."""
    loc = ".".join(str(part) for part in err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = _short(err.get("input"))
    expected = {
        "missing": None,
        "extra_forbidden": None,
        "greater_than": f"a number > {_num(ctx.get('gt'))}",
        "greater_than_equal": f"a number >= {_num(ctx.get('ge'))}",
        "less_than": f"a number < {_num(ctx.get('lt'))}",
        "less_than_equal": f"a number <= {_num(ctx.get('le'))}",
        "float_type": "a number",
        "finite_number": "a finite number (not nan or inf)",
        "float_parsing": "a number",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "string_type": "a string",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping of fields",
        "model_attributes_type": "a mapping of fields",
        "literal_error": f"one of {ctx.get('expected')}",
        "too_short": f"at least {ctx.get('min_length')} item(s)" if "min_length" in ctx else "a longer value",
        "string_too_short": "a non-empty string",
    }
    if kind == "missing":
        return f"{loc}: expected a value, got nothing (required field missing)"
    if kind == "extra_forbidden":
        return _unknown_key(err, model)
    if kind == "invalid_key":
        return f"{loc or '(top level)'}: expected string keys, got {got}"
    if kind == "recursion_loop":
        return f"{loc or '(top level)'}: expected a plain value, got a recursive (self-referencing) one"
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", err.get("msg", "")))
        return f"{loc}: {message}" if loc else message
    loc = loc or "(top level)"
    what = expected.get(kind)
    if what is None:
        return f"{loc}: {err.get('msg', kind)}, got {got}"
    return f"{loc}: expected {what}, got {got}"


def _validation_message(source: str, exc: ValidationError, model: Any = None) -> str:
    """One line for the most telling error: unknown keys first (their typo is the cause of any
    "missing field" next to them), then keys that are not strings, then the rest in file order."""
    rank = {"extra_forbidden": 0, "invalid_key": 1}
    errors = sorted(exc.errors(), key=lambda e: rank.get(e.get("type", ""), 2))
    first = _describe(errors[0], model)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {first}{more}"


#: Config files are a few KB; anything past this is not a profile (and would be read whole).
MAX_CONFIG_BYTES = 1 << 20


def _read_yaml(path: Path, shown: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; every way a file can be unusable is one UserError."""
    try:
        is_dir = path.is_dir()
        size = 0 if is_dir else path.stat().st_size
        raw = b"" if is_dir or size > MAX_CONFIG_BYTES else path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{shown}: expected an existing YAML file, got no such file") from None
    except ValueError:  # a NUL byte in the path
        raise UserError(f"{shown}: expected a file path, got one containing a NUL byte") from None
    except OSError as e:  # permissions, a name too long, a special file...
        raise UserError(f"{shown}: expected a readable YAML file, got {type(e).__name__}: {e.strerror or e}") from None
    if is_dir:
        raise UserError(f"{shown}: expected a YAML file, got a directory")
    if size > MAX_CONFIG_BYTES:
        raise UserError(f"{shown}: expected a YAML config of at most {MAX_CONFIG_BYTES} bytes, got {size}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{shown}: expected UTF-8 text, got a byte {raw[e.start:e.start + 1]!r} at offset {e.start} "
                        "that is not (a binary file?)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"{shown}: {where}expected valid YAML, got a syntax error ({problem})") from None
    except RecursionError:
        raise UserError(f"{shown}: expected a config, got YAML nested too deeply to read") from None
    if data is None:
        raise UserError(f"{shown}: expected a mapping of fields at the top level, got an empty file")
    if not isinstance(data, dict):
        raise UserError(f"{shown}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def _validate(model: type[_Config], data: dict[str, Any], shown: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(_validation_message(shown, e, model)) from None
    except RecursionError:  # pydantic-core guards recursion; this is the last line of defence
        raise UserError(f"{shown}: expected a config, got values nested too deeply to validate") from None


def _resolve(name_or_path: str | os.PathLike[str], kind: str, base_dir: Path | None) -> Path:
    """A profile name (file stem in configs/<kind>/) or a path, as a file path."""
    raw = os.fspath(name_or_path)
    looks_like_path = raw.endswith((".yaml", ".yml")) or os.sep in raw or "/" in raw
    if looks_like_path:
        path = Path(raw).expanduser()
        return base_dir / path if base_dir is not None and not path.is_absolute() else path
    path = configs_dir() / kind / f"{raw}.yaml"
    try:
        exists = "\0" not in raw and path.exists()
    except OSError:  # a name longer than the file system allows
        exists = False
    if not exists:
        known = _list(kind)
        raise UserError(
            f"{kind[:-1]} {raw!r}: expected one of {', '.join(known) or '(none)'} "
            f"(files in {_display(configs_dir() / kind)}) or a path to a .yaml file"
        )
    return path


def _list(kind: str) -> list[str]:
    folder = configs_dir() / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_device(name_or_path: str | os.PathLike[str], *, base_dir: Path | None = None) -> DeviceProfile:
    """Load and validate a device profile by name (``rpi4``) or path; UserError on any mistake."""
    path = _resolve(name_or_path, "devices", base_dir)
    shown = f"device {_display(path)}"
    return _validate(DeviceProfile, _read_yaml(path, shown), shown)


def load_cluster(name_or_path: str | os.PathLike[str]) -> Cluster:
    """Load a cluster by name (``edge3``) or path, resolving every node's device now.

    Resolving eagerly means an unknown device or a broken device file fails here, naming both
    files, rather than halfway through a plan.
    """
    path = _resolve(name_or_path, "clusters", None)
    shown = f"cluster {_display(path)}"
    cluster = _validate(Cluster, _read_yaml(path, shown), shown)
    cluster._base_dir = path.parent
    for i, node in enumerate(cluster.nodes):
        try:
            cluster.device(node.name)
        except UserError as e:
            raise UserError(f"{shown}: nodes.{i}.device: {e}") from None
    return cluster


def list_devices() -> list[str]:
    """Names of the device profiles in configs/devices."""
    return _list("devices")


def list_clusters() -> list[str]:
    """Names of the clusters in configs/clusters."""
    return _list("clusters")
