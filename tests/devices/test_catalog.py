"""The device catalog: keys, citations, figures consistent with the reference, validation."""

import dataclasses
from types import MappingProxyType

import pytest

from devices import DEVICE_CLASSES, DEVICE_FIGURES, GIB, KIB, MIB, DeviceClass

TAGS = ("[spec]", "[measured]", "[approx]", "[choice]")
MCUS = ("mcu_tiny", "mcu_mid", "esp32", "esp32_s3_psram")
PHONES = ("phone_low", "phone_mid", "phone_high")
LINUX_BOARDS = ("rpi_zero2w", "rpi4_2gb", "rpi4_4gb", "jetson_nano", "jetson_orin_nano")


def test_keys_exactly():
    assert set(DEVICE_CLASSES) == {*MCUS, *PHONES, *LINUX_BOARDS}
    for name, c in DEVICE_CLASSES.items():
        assert c.name == name


def test_read_only():
    assert isinstance(DEVICE_CLASSES, MappingProxyType)
    with pytest.raises(TypeError):
        DEVICE_CLASSES["x"] = DEVICE_CLASSES["esp32"]
    c = DEVICE_CLASSES["esp32"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.ram_bytes = 1
    with pytest.raises(TypeError):
        c.sources["ram_bytes"] = "mine"


def test_every_numeric_figure_is_cited_with_a_tag():
    numeric = {f.name for f in dataclasses.fields(DeviceClass)} - {"name", "sources"}
    assert DEVICE_FIGURES == numeric
    for c in DEVICE_CLASSES.values():
        assert set(c.sources) == numeric, c.name
        for key, text in c.sources.items():
            assert text.startswith(TAGS), (c.name, key, text)


def test_power_supply_policy():
    for name in (*MCUS, *PHONES):
        c = DEVICE_CLASSES[name]
        assert c.battery_j is not None and c.battery_j > 0 and c.recharge_w > 0, name
    for name in LINUX_BOARDS:
        c = DEVICE_CLASSES[name]
        assert c.battery_j is None and c.recharge_w == 0.0, name
    assert DEVICE_CLASSES["phone_low"].battery_j == pytest.approx(4.0 * 3.85 * 3600)  # 55 440 J
    phone = DEVICE_CLASSES["phone_mid"]
    assert phone.recharge_w * 86_400 == pytest.approx(phone.battery_j)  # one charge a day


def test_sustained_is_peak_times_efficiency():
    for c in DEVICE_CLASSES.values():
        assert c.sustained_flops_per_s == c.peak_flops_per_s * c.efficiency
        assert c.trainable_bytes == c.ram_bytes - c.runtime_reserve_bytes > 0


def test_figures_agree_with_reference():
    sustained = {n: c.sustained_flops_per_s for n, c in DEVICE_CLASSES.items()}
    assert sustained["mcu_tiny"] == pytest.approx(0.03e9, rel=0.1)  # ~0.03 GFLOP/s
    assert 0.1e9 <= sustained["mcu_mid"] <= 0.4e9
    assert 0.1e9 <= sustained["esp32"] <= 0.5e9
    assert 0.1e9 <= sustained["esp32_s3_psram"] <= 0.5e9
    assert 1e9 <= sustained["rpi_zero2w"] <= 2e9
    assert DEVICE_CLASSES["jetson_nano"].peak_flops_per_s == 472e9 / 2  # fp16 spec, fp32 half
    assert DEVICE_CLASSES["mcu_tiny"].ram_bytes == 256 * KIB
    assert DEVICE_CLASSES["esp32"].ram_bytes == 520 * KIB
    assert DEVICE_CLASSES["esp32_s3_psram"].ram_bytes == 512 * KIB + 8 * MIB
    assert DEVICE_CLASSES["rpi_zero2w"].trainable_bytes == 300 * MIB
    assert DEVICE_CLASSES["rpi4_2gb"].ram_bytes == 2 * GIB
    assert DEVICE_CLASSES["rpi4_4gb"].trainable_bytes == 4 * GIB - 300 * MIB
    assert DEVICE_CLASSES["jetson_nano"].trainable_bytes == int(2.5 * GIB)
    assert DEVICE_CLASSES["jetson_orin_nano"].trainable_bytes == 6 * GIB
    assert [DEVICE_CLASSES[p].trainable_bytes for p in PHONES] == [1 * GIB, 3 * GIB, 6 * GIB]


def test_runtime_reserves_are_plausible():
    for name in ("mcu_tiny", "mcu_mid"):
        assert 16 * KIB <= DEVICE_CLASSES[name].runtime_reserve_bytes <= 100 * KIB
    for name in ("esp32", "esp32_s3_psram"):  # Wi-Fi stack: larger than a bare TFLM runtime
        assert DEVICE_CLASSES[name].runtime_reserve_bytes <= 300 * KIB
    for name in (*LINUX_BOARDS, *PHONES):
        assert 100 * MIB <= DEVICE_CLASSES[name].runtime_reserve_bytes <= 6 * GIB


def test_background_fractions_leave_room():
    for c in DEVICE_CLASSES.values():
        assert c.background_mean_fraction + c.background_amplitude_fraction < 1.0, c.name


def _valid(**changes):
    base = DEVICE_CLASSES["esp32"]
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("changes, field", [
    ({"ram_bytes": 0}, "ram_bytes"),
    ({"ram_bytes": 1.5e6}, "ram_bytes"),
    ({"runtime_reserve_bytes": 520 * KIB}, "runtime_reserve_bytes"),
    ({"peak_flops_per_s": 0.0}, "peak_flops_per_s"),
    ({"efficiency": 0.0}, "efficiency"),
    ({"efficiency": 1.1}, "efficiency"),
    ({"flops_sigma": -0.1}, "flops_sigma"),
    ({"compute_power_w": 0.0}, "compute_power_w"),
    ({"battery_j": -1.0}, "battery_j"),
    ({"battery_j": None}, "recharge_w"),  # mains with a recharge power
    ({"recharge_w": -1.0}, "recharge_w"),
    ({"background_mean_fraction": 1.5}, "background_mean_fraction"),
    ({"background_amplitude_fraction": -0.1}, "background_amplitude_fraction"),
    ({"name": ""}, "name"),
])
def test_invalid_fields(changes, field):
    with pytest.raises(ValueError, match=field):
        _valid(**changes)


def test_sources_must_cover_exactly_the_figures():
    sources = dict(DEVICE_CLASSES["esp32"].sources)
    del sources["efficiency"]
    with pytest.raises(ValueError, match="sources.*efficiency"):
        _valid(sources=sources)
    with pytest.raises(ValueError, match="sources.*colour"):
        _valid(sources={**DEVICE_CLASSES["esp32"].sources, "colour": "[choice] blue"})
    assert _valid(name="esp32_copy").sustained_flops_per_s > 0
