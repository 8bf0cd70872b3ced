"""The benchmark's account of the machine: CPU description and the load while timing."""

import time

from emo_jax.bench_machine import Load, LoadMeter, cpu_description


def test_cpu_description_names_the_cores():
    description = cpu_description()
    assert "cores" in description and "flags" in description


def test_load_meter_sees_this_process_working():
    cpu_before = time.process_time()
    with LoadMeter() as meter:
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass
    spent = (time.process_time() - cpu_before) / meter.load.seconds  # this process's cores, measured apart
    load = meter.load
    assert 0.45 < load.seconds < 2.0 and spent > 0.2
    assert abs(load.own - spent) < 0.1
    assert load.busy >= load.own - 0.1 and load.others >= 0.0


def test_busy_neighbours_or_steal_make_a_timing_suspect():
    assert not Load(1.0, busy=1.05, own=1.0, steal=0.0, cores=2).suspect
    assert Load(1.0, busy=1.6, own=1.0, steal=0.0, cores=2).suspect
    assert Load(1.0, busy=1.0, own=1.0, steal=0.3, cores=2).suspect
    assert "others 0.60" in Load(1.0, busy=1.6, own=1.0, steal=0.0, cores=2).describe()
