"""Records name the CPU kind: the same seed gives different results on AMX and non-AMX CPUs."""

from unlearnbench.leaderboard import hardware_name
from unlearnbench.records import cpu_description, environment

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_cpu_model_and_numerics_features_from_cpuinfo():
    assert cpu_description(INTEL) == {"cpu": "Intel(R) Xeon(R) Processor",
                                      "cpu_features": ["AMX-BF16", "AVX512-BF16", "AVX-512", "AVX2"]}
    assert cpu_description(AMD) == {"cpu": "AMD EPYC 7B13", "cpu_features": ["AVX2"]}


def test_without_cpuinfo_the_platform_names_the_cpu():
    described = cpu_description("")
    assert described["cpu"] and described["cpu_features"] == []


def test_environment_records_this_machines_cpu():
    hardware = environment()["hardware"]
    assert hardware["cpu"] == cpu_description()["cpu"] and isinstance(hardware["cpu_features"], list)


def test_leaderboard_provenance_shows_the_features_and_keeps_old_records_as_they_were():
    new = {**cpu_description(INTEL), "torch_threads": 2, "cuda": []}
    assert hardware_name(new) == "Intel(R) Xeon(R) Processor (AMX-BF16, AVX512-BF16, AVX-512, AVX2) CPU, 2 threads"
    # Records written before the CPU model was recorded publish exactly as before.
    assert hardware_name({"cpu": "x86_64", "torch_threads": 1, "cuda": []}) == "x86_64 CPU, 1 thread"
