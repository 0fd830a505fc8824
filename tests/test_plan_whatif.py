"""What-ifs: one reader for commsim plan --what-if and a sweep's what_if."""

import pytest

from commsim.errors import CommsimError
from commsim.plan import gpus, models, planner, sweep, whatif
from commsim.plan.fabric import Fabric

FAB = Fabric.load("dgx-h100-32node")


@pytest.mark.parametrize("key,base,value,want", [
    ("nic_bw", "400Gb/s", "2x", 100e9),                 # a bandwidth keeps its unit's meaning
    ("nic_bw", 50e9, "0.5x", 25e9),
    ("nvlink_latency", "1us", "0.5x", 0.5e-6),
    ("nic_bw", "400Gb/s", "800Gb/s", "800Gb/s"),         # a value is the builder's to read
    ("nic_bw", "400Gb/s", 25e9, 25e9),                   # a YAML number: bytes/s
    ("nic_latency", "1us", "0", "0"),
    ("gpus_per_node", 8, "0.5x", 4),                     # counts stay whole
    ("gpus_per_node", 8, "4", 4),
    ("gpus_per_node", 8, 4.0, 4),
    ("spines", 4, "2x", 8),
    ("oversubscription", None, "2:1", 2.0),              # a ratio
    ("oversubscription", 2, "1.5x", 3),
    ("oversubscription", 2, "0.75x", 1.5),
    ("oversubscription", "4:1", "0.5x", 2.0),
    ("oversubscription", None, "3", 3.0),
    ("rail_optimized", True, "false", False),            # switches: true or false
    ("rail_optimized", True, "FALSE", False),
    ("pxn", False, "yes", True),
    ("pxn", False, True, True),
    ("nic_efficiency", 1.0, "0.9", 0.9),
    ("nic_efficiency", 0.8, "0.5x", 0.4),
])
def test_values(key, base, value, want):
    got = whatif.topology_value(key, base, value)
    assert got == pytest.approx(want) if isinstance(want, float) else got == want
    assert type(got) is type(want)


@pytest.mark.parametrize("key,base,value,match", [
    ("gpus_per_node", 8, "0.3x", "2.4 gpus_per_node, not a whole number"),
    ("gpus_per_node", 8, "2.5", "must be a whole number"),
    ("spine_bw", None, "2x", "no value to scale"),
    ("rail_optimized", True, "2x", "true or false"),
    ("rail_optimized", True, "maybe", "rail_optimized is true or false"),
    ("nic_bw", "400Gb/s", "800", "unit"),                # 800 bytes/s is surely a slip
    ("nic_bw", "400Gb/s", "fastx", "write a factor like 2x"),
    ("nic_bw", "400Gb/s", "-2x", "positive"),
    ("oversubscription", None, "2:0", "ratio like 2:1"),
])
def test_bad_values_name_the_flag_and_the_change(key, base, value, match):
    with pytest.raises(CommsimError, match=match) as info:
        whatif.topology_value(key, base, value)
    assert str(info.value).startswith(f"--what-if {key}={value}: ")
    with pytest.raises(CommsimError) as info:
        whatif.topology_value(key, base, value, field="what_if")
    assert str(info.value).startswith(f"what_if {key}={value}: ")


CHANGES = [{"nic_bw": "2x"}, {"nvlink_latency": "0.5x", "spine_bw": "100GB/s"},
           {"oversubscription": "2:1"}, {"gpus_per_node": "4"}, {"rail_optimized": "false"},
           {"nic_efficiency": "0.9"}, {"spines": "4"}]


@pytest.mark.parametrize("changes", CHANGES)
def test_plan_and_sweep_apply_a_what_if_alike(changes):
    fab = FAB.with_changes(changes)
    data = sweep.apply_what_if(dict(FAB.data, name=FAB.name), changes)
    assert fab.params == data["params"]
    assert fab.ngpus == FAB.ngpus                   # gpus_per_node keeps the gpu count
    assert FAB.with_changes({}).params == FAB.params


def test_gpus_per_node_keeps_the_gpu_count_in_both():
    fab = FAB.with_changes({"gpus_per_node": "0.5x"})
    assert fab.gpus_per_node == 4 and fab.ngpus == 256
    data = sweep.apply_what_if(dict(FAB.data), {"gpus_per_node": 16})
    assert data["params"]["nodes"] == 16 and data["params"]["gpus_per_node"] == 16


def test_unknown_keys_get_close_matches_in_both():
    with pytest.raises(CommsimError, match="unknown --what-if key 'nic_bww'; did you mean "
                       "'nic_bw'") as info:
        FAB.with_changes({"nic_bww": "2x"})
    assert "builder dgx_cluster" in str(info.value)
    with pytest.raises(CommsimError, match="unknown what_if key 'nic_bww'; did you mean"):
        sweep.apply_what_if(dict(FAB.data), {"nic_bww": "2x"})
    with pytest.raises(CommsimError, match="did you mean 'tp_comm_overlap'"):
        planner.parse_what_if("tp_comm_overlp=true", FAB)
    ring = Fabric.load("ring-8")
    with pytest.raises(CommsimError, match="did you mean 'bandwidth'"):
        ring.with_changes({"bandwith": "2x"})


def test_plan_keys():
    cfg = planner.Config(models.get("llama2-7b"), gpus.get("H100"), tp=2)
    out = planner.apply_config(cfg, {"tp": "4", "tp_comm_overlap": "true", "mfu": "0.4",
                                     "gpu": "h200", "fp8_comm": "none", "nic_bw": "2x"})
    assert (out.tp, out.tp_comm_overlap, out.mfu, out.gpu.name) == (4, True, 0.4, "H200")
    out = planner.apply_config(cfg, {"flash_attention": False, "interleave": 2}, "what_if")
    assert out.flash_attention is False and out.interleave == 2
    for change, match in (({"tp": "x"}, "--what-if tp=x: tp must be a whole number"),
                          ({"tp": "1.5"}, "whole number"),
                          ({"mfu": "2"}, "--what-if mfu=2: mfu must be a number in"),
                          ({"overlap": "perhaps"}, "overlap is true or false"),
                          ({"gpu": "H10"}, "--what-if gpu=H10: unknown gpu"),
                          ({"fp8_comm": "tp"}, "--what-if fp8_comm=tp: --fp8-comm tp: needs "
                                               "--dtype fp8")):
        with pytest.raises(CommsimError, match=match):
            planner.apply_config(cfg, change)


def test_a_plan_key_what_if_runs():
    cfg = planner.Config(models.get("llama2-7b"), gpus.get("H100"), tp=4, global_batch=64,
                         seq_len=2048)
    p = planner.plan(cfg, FAB, [32], ["tp_comm_overlap=true", "dtype=fp8,fp8_comm=all"],
                     simulate=False)
    base, tpo, fp8 = p.rows
    assert tpo.overlaps == ["grad-reduce", "tp-comm"] and base.overlaps == ["grad-reduce"]
    assert tpo.comm_exposed_s < base.comm_exposed_s
    assert fp8.fp8_comm == "all" and fp8.dims["tp"]["bytes"] < base.dims["tp"]["bytes"]


def test_node_count_is_the_plans_but_a_sweeps_to_change():
    with pytest.raises(CommsimError, match="unknown --what-if key 'nodes'"):
        planner.parse_what_if("nodes=8", FAB)
    with pytest.raises(CommsimError, match="unknown --what-if key 'nodes'"):
        FAB.with_changes({"nodes": "8"})
    assert sweep.apply_what_if(dict(FAB.data), {"nodes": 8})["params"]["nodes"] == 8
