"""SGLang 0.5.x's mem_fraction_static default (server_args.py `_handle_gpu_memory_settings`,
read in 0.5.3.post3 and 0.5.6), used to replay published rows of SGLang >= 0.5.3."""

from __future__ import annotations

import pytest

from apex_fast.engines.options import LaunchSettings
from apex_fast.engines.sglang import mem_fraction_static_05
from apex_fast.hardware.devices import get_device
from apex_fast.validation.published import _launch_settings as _replay_settings
from apex_fast.validation.published import _version


@pytest.mark.parametrize(
    ("mib", "tp", "expected"),
    [
        # 80 GiB, TP1: chunk 8192, graphs to 256: 512 + 12288 + 512 + 128 = 13440 MiB reserved
        (81920, 1, round((81920 - 13440) / 81920, 3)),
        # TP8: graphs to 512 and 1024 MiB for TP: 512 + 12288 + 1024 + 1024 = 14848
        (81920, 8, round((81920 - 14848) / 81920, 3)),
        # 24 GiB: chunk 2048, graphs to 24: 512 + 3072 + 48 + 128 = 3760 (no 10 GiB floor)
        (24 * 1024, 1, round((24 * 1024 - 3760) / (24 * 1024), 3)),
        # 40 GiB: chunk 4096, graphs to 32: 512 + 6144 + 64 + 128 = 6848
        (40 * 1024, 1, round((40 * 1024 - 6848) / (40 * 1024), 3)),
        # 192 GiB, TP1: chunk 16384, graphs to 512: 512 + 24576 + 1024 + 128 = 26240
        (192 * 1024, 1, round((192 * 1024 - 26240) / (192 * 1024), 3)),
    ],
)
def test_fraction_closed_form(mib, tp, expected):
    assert mem_fraction_static_05(mib, tp) == expected


def _row(version: str) -> dict:
    return {"engine_profile": "sglang", "engine_version": version, "pp": "1"}


def _launch_settings(row: dict, device, tp: int):  # noqa: ANN001, ANN202 - as the replay calls it
    return _replay_settings(row, device, tp, LaunchSettings(engine=row["engine_profile"]))


def test_replay_uses_the_05_rule_only_from_053():
    h100 = get_device("H100-SXM-80GB")
    new = _launch_settings(_row("0.5.6"), h100, 8)
    assert new.gpu_memory_utilization == mem_fraction_static_05(h100.hbm_gb * 1024, 8)
    assert _launch_settings(_row("0.5.3.post3"), h100, 1).gpu_memory_utilization is not None
    # 0.4.x and 0.3.x rows keep the profile's table (left to the engine default)
    assert _launch_settings(_row("0.4.5.post1"), h100, 8).gpu_memory_utilization is None
    assert _launch_settings(_row("0.3.0"), h100, 1).gpu_memory_utilization is None
    other = {"engine_profile": "vllm-v1", "engine_version": "0.11.0", "pp": ""}
    assert _launch_settings(other, h100, 1).gpu_memory_utilization is None


def test_version_parse():
    assert _version("0.5.3.post3") == (0, 5, 3)
    assert _version("0.4.5.post1") == (0, 4, 5)
    assert _version("1.0 (docs edition)") == (1, 0)
    assert _version("main @ 2025-04-15 (source build)") == (0,)
