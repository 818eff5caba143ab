"""Device/link/cluster profiles: shipped YAML is valid and cited; every mistake is a one-line UserError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dnninfer.cost import (
    Cluster,
    DeviceProfile,
    LinkProfile,
    configs_dir,
    list_clusters,
    list_devices,
    load_cluster,
    load_device,
)
from dnninfer.errors import UserError

SHIPPED_DEVICES = {"host", "rpi4", "odroid_xu4", "jetson_nano", "jetson_tx2"}
SHIPPED_CLUSTERS = {"edge3", "hetero4", "local2"}

GOOD_DEVICE = """\
name: board
description: test board
pus:
  - {name: cpu, kind: cpu, cores: 4, freq_ghz: 1.5, speed: 0.25, p_active_w: 3.7, p_idle_w: 0}
p_board_idle_w: 2.7
memory_mb: 4096
sources: [here]
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- shipped configs -------------------------------------------------------------------------------


def test_configs_dir_is_the_repo_configs_folder():
    assert (configs_dir() / "devices").is_dir() and (configs_dir() / "clusters").is_dir()


def test_shipped_devices_and_clusters_are_listed():
    assert set(list_devices()) >= SHIPPED_DEVICES
    assert set(list_clusters()) >= SHIPPED_CLUSTERS


@pytest.mark.parametrize("name", sorted(list_devices()))
def test_every_shipped_device_loads_named_after_its_file(name):
    dev = load_device(name)
    assert dev.name == name
    assert dev.pus and all(p.speed > 0 for p in dev.pus)


@pytest.mark.parametrize("name", sorted(set(list_devices()) - {"host", "host1"}))
def test_every_shipped_board_cites_sources(name):
    dev = load_device(name)
    assert dev.sources, f"{name}: sources must not be empty"
    assert all(s.strip() for s in dev.sources)


def test_host_is_the_speed_unit_and_states_its_power_is_assumed():
    host = load_device("host")
    assert host.pu().speed == 1.0 and host.pu().cores == 2
    assert "ASSUMPTION" in (host.notes or "")
    one = load_device("host1")
    assert one.pu().speed == 1.0 and one.pu().lanes == 1


def test_board_profiles_have_the_expected_processing_units():
    assert [p.name for p in load_device("odroid_xu4").pus] == ["big", "little"]
    assert {p.kind for p in load_device("jetson_nano").pus} == {"cpu", "gpu"}
    tx2 = load_device("jetson_tx2")
    assert {p.name: p.cores for p in tx2.pus} == {"denver": 2, "a57": 4, "gpu": 256}
    assert load_device("rpi4").pu().cores == 4


@pytest.mark.parametrize("name", sorted(list_clusters()))
def test_every_shipped_cluster_resolves_devices_and_links_all_pairs(name):
    cluster = load_cluster(name)
    devices = cluster.devices()
    assert set(devices) == set(cluster.node_names)
    n = len(cluster.node_names)
    assert len(cluster.link_map()) == n * (n - 1)  # every planner may move tensors between any pair


def test_shipped_clusters_match_their_description():
    edge3 = load_cluster("edge3")
    assert sorted(d.name for d in edge3.devices().values()) == ["jetson_nano", "odroid_xu4", "rpi4"]
    assert {(lk.bandwidth_mbps, lk.rtt_ms) for lk in edge3.link_map().values()} == {(50, 5)}
    hetero = load_cluster("hetero4")
    assert len(hetero.node_names) == 4 and "jetson_tx2" in {d.name for d in hetero.devices().values()}
    bw = {lk.bandwidth_mbps for lk in hetero.link_map().values()}
    assert min(bw) == 10 and max(bw) == 100 and len(bw) > 2
    local = load_cluster("local2")
    assert [d.name for d in local.devices().values()] == ["host", "host"]
    assert local.link("n1", "n2").bandwidth_mbps == 100 and local.link("n2", "n1").rtt_ms == 2


# -- behaviour -------------------------------------------------------------------------------------


def test_transfer_s_is_half_rtt_plus_serialisation():
    link = LinkProfile(name="l", bandwidth_mbps=8, rtt_ms=10, energy_nj_per_bit=0)
    assert link.transfer_s(1_000_000) == pytest.approx(0.005 + 1.0)  # 8 Mbit over 8 Mbit/s
    assert link.transfer_s(0) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        link.transfer_s(-1)


def _cluster(default: bool) -> Cluster:
    fast = {"name": "fast", "bandwidth_mbps": 100, "rtt_ms": 1, "energy_nj_per_bit": 1}
    slow = {"name": "slow", "bandwidth_mbps": 10, "rtt_ms": 20, "energy_nj_per_bit": 1}
    return Cluster(
        name="c",
        nodes=[{"name": n, "device": "host"} for n in ("a", "b", "c")],
        links=[{"a": "a", "b": "b", "link": fast}],
        default_link=slow if default else None,
    )


def test_cluster_link_is_symmetric_and_falls_back_to_default():
    c = _cluster(default=True)
    assert c.link("a", "b").name == "fast" and c.link("b", "a").name == "fast"
    assert c.link("a", "c").name == "slow"
    assert c.transfer_s("a", "a", 10**9) == 0.0
    assert c.transfer_s("b", "a", 1_250_000) == pytest.approx(0.0005 + 0.1)


def test_cluster_link_without_default_is_a_user_error():
    c = _cluster(default=False)
    with pytest.raises(UserError, match="'a'-'c'"):
        c.link("a", "c")
    with pytest.raises(UserError, match="node 'zz'"):
        c.link("a", "zz")
    assert ("a", "c") not in c.link_map() and ("a", "b") in c.link_map()


def test_device_pu_lookup_defaults_to_fastest_and_names_unknown():
    dev = load_device("odroid_xu4")
    assert dev.pu().name == "big" and dev.pu("little").name == "little"
    with pytest.raises(UserError, match=r"'npu'.*big, little"):
        dev.pu("npu")


def test_configs_env_var_overrides_folder(tmp_path, monkeypatch):
    (tmp_path / "devices").mkdir()
    _write(tmp_path / "devices", "board.yaml", GOOD_DEVICE)
    monkeypatch.setenv("DNNINFER_CONFIGS", str(tmp_path))
    assert list_devices() == ["board"] and list_clusters() == []
    assert load_device("board").pu().p_active_w == 3.7


def test_cluster_device_paths_are_relative_to_the_cluster_file(tmp_path):
    _write(tmp_path, "board.yaml", GOOD_DEVICE)
    path = _write(tmp_path, "c.yaml", """\
        name: c
        nodes: [{name: a, device: board.yaml}, {name: b, device: host}]
        default_link: {name: l, bandwidth_mbps: 10, rtt_ms: 1, energy_nj_per_bit: 0}
        """)
    cluster = load_cluster(path)
    assert cluster.device("a").name == "board" and cluster.device("b").name == "host"


def test_good_file_loads_negative_control(tmp_path):
    """The bad-file tests below must fail for their one mistake, not because loading is broken."""
    assert isinstance(load_device(_write(tmp_path, "ok.yaml", GOOD_DEVICE)), DeviceProfile)


# -- every user mistake: one line naming the file and the field -------------------------------------

BAD_DEVICES = {
    "wrong_type": (GOOD_DEVICE.replace("cores: 4", "cores: four"), ["pus.0.cores", "integer", "'four'"]),
    "missing_field": (GOOD_DEVICE.replace("memory_mb: 4096\n", ""), ["memory_mb", "missing"]),
    "negative_power": (GOOD_DEVICE.replace("p_board_idle_w: 2.7", "p_board_idle_w: -1"),
                       ["p_board_idle_w", ">= 0", "-1"]),
    "bad_kind": (GOOD_DEVICE.replace("kind: cpu", "kind: tpu"), ["pus.0.kind", "'tpu'"]),
    "unknown_key": (GOOD_DEVICE + "colour: red\n", ["colour", "unknown key"]),
    "duplicate_pu": (GOOD_DEVICE.replace("p_board_idle_w:", "  - {name: cpu, kind: gpu, cores: 1, speed: 1, "
                                         "p_active_w: 1}\np_board_idle_w:"), ["pus: PU names must be unique", "cpu"]),
    "unknown_op_kind": (GOOD_DEVICE.replace("speed: 0.25", "speed: 0.25, op_speed: {convv: 2}"),
                        ["pus.0.op_speed", "convv"]),
    "syntax_error": (GOOD_DEVICE.replace("pus:", "pus: [unclosed"), ["line", "YAML"]),
    "not_a_mapping": ("- just\n- a list\n", ["mapping", "list"]),
}


BAD_CLUSTERS = {
    "negative_bandwidth": ("""\
        name: x
        nodes: [{name: a, device: host}, {name: b, device: host}]
        links: [{a: a, b: b, link: {name: l, bandwidth_mbps: -5, rtt_ms: 1, energy_nj_per_bit: 0}}]
        """, ["links.0.link.bandwidth_mbps: expected a number > 0, got -5"]),
    "unknown_device": ("""\
        name: x
        nodes: [{name: a, device: host}, {name: b, device: nosuchboard}]
        """, ["nodes.1.device", "'nosuchboard'", "rpi4"]),
    "link_to_unknown_node": ("""\
        name: x
        nodes: [{name: a, device: host}]
        links: [{a: a, b: ghost, link: {name: l, bandwidth_mbps: 5, rtt_ms: 1, energy_nj_per_bit: 0}}]
        """, ["links.0", "'ghost'"]),
    "duplicate_node": ("""\
        name: x
        nodes: [{name: a, device: host}, {name: a, device: rpi4}]
        """, ["nodes: node names must be unique", "a"]),
    "missing_nodes": ("name: x\n", ["nodes", "missing"]),
    "self_link": ("""\
        name: x
        nodes: [{name: a, device: host}]
        links: [{a: a, b: a, link: {name: l, bandwidth_mbps: 5, rtt_ms: 1, energy_nj_per_bit: 0}}]
        """, ["links.0", "two different nodes"]),
    "syntax_error": ("name: x\nnodes: {a: [1, 2\n", ["line", "YAML"]),
}


BAD_FILES = [(load_device, case, *v) for case, v in sorted(BAD_DEVICES.items())] + [
    (load_cluster, case, *v) for case, v in sorted(BAD_CLUSTERS.items())
]


@pytest.mark.parametrize(("loader", "case", "text", "needles"), BAD_FILES,
                         ids=[f"{f.__name__}-{c}" for f, c, _, _ in BAD_FILES])
def test_bad_config_file_is_one_line_user_error(tmp_path, loader, case, text, needles):
    path = _write(tmp_path, f"{case}.yaml", text)
    with pytest.raises(UserError) as info:
        loader(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{case}.yaml" in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def test_missing_file_and_unknown_name_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"nothere\.yaml: expected an existing YAML file"):
        load_cluster(tmp_path / "nothere.yaml")
    with pytest.raises(UserError, match=r"device 'rpi9': expected one of .*rpi4"):
        load_device("rpi9")
    with pytest.raises(UserError, match=r"cluster 'edge99': expected one of .*edge3"):
        load_cluster("edge99")


def test_lane_scaling_follows_amdahl_and_gpus_have_one_lane():
    nano = load_device("jetson_nano")
    cpu, gpu = nano.pu("cpu"), nano.pu("gpu")
    assert cpu.scaling(1) == pytest.approx(1.0)
    assert cpu.scaling(4) == pytest.approx(2.70, abs=0.01)  # ncnn's measured 2.66-2.78x
    assert gpu.lanes == 1 and gpu.scaling() == 1.0
    assert cpu.rate("conv") == pytest.approx(cpu.speed * cpu.scaling(4))
    with pytest.raises(ValueError, match="lanes"):
        cpu.scaling(5)
    # a stock framework runs on the GPU of a Nano and on the big cluster of an XU4
    assert nano.default_pu.name == "gpu"
    assert load_device("odroid_xu4").default_pu.name == "big"


# -- unknown keys first, numbers finite, any unusable file one line (issue 14, item 7) ------------

GOOD_CLUSTER = """\
name: x
nodes: [{name: a, device: host}, {name: b, device: host}]
links: [{a: a, b: b, link: {name: l, bandwidth_mbps: 5, rtt_ms: 1, energy_nj_per_bit: 0}}]
"""


def test_good_cluster_loads_negative_control(tmp_path):
    cluster = load_cluster(_write(tmp_path, "ok.yaml", GOOD_CLUSTER))
    assert cluster.link("a", "b").bandwidth_mbps == 5


TYPOS = {
    # a typo'd key also leaves its field missing: the unknown key must be what is reported
    "link_key": (load_cluster, GOOD_CLUSTER.replace("bandwidth_mbps", "bandwith_mbps"),
                 "links.0.link: unknown key 'bandwith_mbps' (did you mean 'bandwidth_mbps'?)"),
    "top_level_key": (load_cluster, GOOD_CLUSTER.replace("nodes:", "nodez:"),
                      "(top level): unknown key 'nodez' (did you mean 'nodes'?)"),
    "pu_key": (load_device, GOOD_DEVICE.replace("p_active_w", "p_activ_w"),
               "pus.0: unknown key 'p_activ_w' (did you mean 'p_active_w'?)"),
    "no_close_name": (load_device, GOOD_DEVICE + "colour: red\n",
                      "(top level): unknown key 'colour' (expected one of name, description, pus"),
}


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_unknown_key_is_reported_first_with_the_nearest_name(tmp_path, case):
    loader, text, expected = TYPOS[case]
    with pytest.raises(UserError) as info:
        loader(_write(tmp_path, f"{case}.yaml", text))
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_numbers_are_refused(tmp_path, value):
    path = _write(tmp_path, "c.yaml", GOOD_CLUSTER.replace("bandwidth_mbps: 5", f"bandwidth_mbps: {value}"))
    with pytest.raises(UserError, match=r"links\.0\.link\.bandwidth_mbps: expected a (finite )?number"):
        load_cluster(path)


def test_nan_and_inf_in_a_device_are_refused(tmp_path):
    for field in ("speed: 0.25", "p_active_w: 3.7", "p_board_idle_w: 2.7"):
        key = field.split(":")[0]
        path = _write(tmp_path, f"{key}.yaml", GOOD_DEVICE.replace(field, f"{key}: .inf"))
        with pytest.raises(UserError, match=rf"{key}: expected a finite number"):
            load_device(path)


def _unusable_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "folder.yaml").mkdir()
    files = {
        "empty": (_write(tmp_path, "empty.yaml", ""), "got an empty file"),
        "comments_only": (_write(tmp_path, "comments.yaml", "# nothing here\n"), "got an empty file"),
        "folder": (tmp_path / "folder.yaml", "got a directory"),
        "deep": (_write(tmp_path, "deep.yaml", "a: " + "[" * 3000 + "]" * 3000 + "\n"), "nested too deeply"),
        "two_documents": (_write(tmp_path, "two.yaml", "name: a\n---\nname: b\n"), "expected valid YAML"),
        "python_tag": (_write(tmp_path, "tag.yaml", "name: !!python/object/apply:os.getcwd []\n"), "valid YAML"),
        "control_char": (_write(tmp_path, "ctrl.yaml", "name: \x01\n"), "valid YAML"),
        "string_keys": (_write(tmp_path, "keys.yaml", "3: 4\n"), "expected string keys"),
        "name_too_long": (tmp_path / ("a" * 300 + ".yaml"), "expected a readable YAML file"),
        "nul_in_path": (tmp_path / "a\0b.yaml", "NUL byte"),
    }
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    files["binary"] = (binary, "expected UTF-8 text")
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# padding\n" * 120_000)  # 1.2 MB of comments: valid YAML, but not a profile
    files["huge"] = (huge, "at most 1048576 bytes")
    return files


UNUSABLE = ["binary", "comments_only", "control_char", "deep", "empty", "folder", "huge", "name_too_long",
            "nul_in_path", "python_tag", "string_keys", "two_documents"]


@pytest.mark.parametrize("case", UNUSABLE)
def test_every_unusable_yaml_file_is_one_line(tmp_path, case):
    files = _unusable_files(tmp_path)
    assert sorted(files) == UNUSABLE
    path, needle = files[case]
    for loader in (load_cluster, load_device):
        with pytest.raises(UserError) as info:
            loader(path)
        msg = str(info.value)
        assert needle in msg and "\n" not in msg, f"{case}: {msg!r}"
        assert msg.startswith(("cluster ", "device ")), f"{case}: {msg!r}"


def test_unreadable_file_is_one_line(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = _write(tmp_path, "locked.yaml", GOOD_CLUSTER)
    path.chmod(0)
    with pytest.raises(UserError, match="expected a readable YAML file, got PermissionError"):
        load_cluster(path)


def test_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    """Anchors make a small file hold a huge value; the message must quote it briefly."""
    text = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1, 2, 3'}]\n" for i in range(8))
    path = _write(tmp_path, "bomb.yaml", "name: x\nnodes: *l7\n" + text)
    with pytest.raises(UserError) as info:
        load_cluster(path)
    assert len(str(info.value)) < 400
