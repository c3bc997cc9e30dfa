"""The device catalog: one ``DeviceClass`` per kind of hardware, every figure cited.

Tags follow ``shared/reference/devices.md`` ("the reference" below): [spec] maker's figure,
[measured] third-party measurement, [approx] commonly quoted or derived and not checked against
a primary source, [choice] our modelling choice with its reason. Peaks are fp32; where no maker
figure exists they are cores x clock x fp32 FLOPs per cycle ([approx]), and ``efficiency``
brings them down to the reference's sustained figures. Runtime reserves for Linux boards and
phones (OS + Python + torch) are [approx] until measured on hardware.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from devices._device_class import DEVICE_FIGURES, GIB, KIB, MIB, DeviceClass

__all__ = ["DEVICE_CLASSES", "DEVICE_FIGURES", "DeviceClass", "GIB", "KIB", "MIB", "REJOIN_FRACTION"]

_REF = "shared/reference/devices.md"
DAY_S = 86_400.0  # phones: one full recharge per day on average
#: [choice] A battery device that ran flat stays offline until recharged to this share of its capacity.
#: A device shut down by its power manager comes back only with a margin above empty (so that it does not
#: shut down again at once); 20 % is the common "low battery" threshold of phone operating systems and a
#: margin that leaves every catalog board several tasks of charge. The same share for every class: the
#: reference gives no per-class figure.
REJOIN_FRACTION = 0.2


def _lipo_j(mah: float) -> float:
    """Single-cell LiPo of ``mah`` at 3.7 V nominal, in joules."""
    return mah / 1000.0 * 3.7 * 3600.0


def _phone_j(mah: float) -> float:
    """Phone cell of ``mah`` at 3.85 V nominal, in joules."""
    return mah / 1000.0 * 3.85 * 3600.0


def _power(battery: str, recharge: str) -> dict[str, str]:
    return {"battery_j": battery, "recharge_w": recharge}


def _background(mean: str, amplitude: str) -> dict[str, str]:
    return {"background_mean_fraction": mean, "background_amplitude_fraction": amplitude}


_MAINS = _power("[choice] mains powered", "[choice] mains powered: nothing to recharge")
_MCU_BG = _background("[choice] bare-metal firmware: sensor buffers ~5 % of trainable RAM",
                      "[choice] buffer fill varies by ~2 % of trainable RAM")
_WIFI_BG = _background("[choice] Wi-Fi/lwIP buffers ~10 % of trainable RAM",
                       "[choice] network buffers swing by ~5 % with traffic")
_SBC_BG = _background("[choice] dedicated Linux board: services ~10 % of trainable RAM",
                      "[choice] page cache and services swing by ~5 %")
_MCU_SIGMA = "[choice] fixed clock and silicon: spread from firmware builds only"
_ESP_RESERVE = ("[approx] ESP-IDF with the Wi-Fi/lwIP stack started keeps roughly half of "
                "internal SRAM; a TFLM-style runtime adds a few tens of KB")
_PHONE_CHARGE = "[choice] one full charge per day on average: battery_j / 86400 s"


def _phone(name: str, ram_gib: int, usable_gib: int, peak: float, peak_src: str, eff: float,
           power_w: float, mah: float, bg_mean: float, bg_amp: float) -> DeviceClass:
    battery_j = _phone_j(mah)
    return DeviceClass(
        name=name, ram_bytes=ram_gib * GIB, runtime_reserve_bytes=(ram_gib - usable_gib) * GIB,
        peak_flops_per_s=peak, efficiency=eff, flops_sigma=0.3, compute_power_w=power_w,
        battery_j=battery_j, recharge_w=battery_j / DAY_S,
        background_mean_fraction=bg_mean, background_amplitude_fraction=bg_amp,
        sources={
            "ram_bytes": f"[choice] typical {ram_gib} GB RAM of the tier",
            "runtime_reserve_bytes": f"[approx] Android + app runtime; leaves the {usable_gib} GB "
                                     f"usable that the reference gives ({_REF})",
            "peak_flops_per_s": peak_src,
            "efficiency": f"[choice] CPU training under thermal limits: {eff:g} of peak; "
                          f"replace with AI Benchmark / FedScale ranges",
            "flops_sigma": "[choice] many SoCs and thermal designs within one tier",
            "compute_power_w": f"[choice] sustained SoC power of the tier, {power_w:g} W",
            "battery_j": f"[choice] {mah:g} mAh x 3.85 V nominal",
            "recharge_w": _PHONE_CHARGE,
            **_background(f"[choice] other apps hold ~{bg_mean:.0%} of usable RAM",
                          f"[choice] app switching swings it by ~{bg_amp:.0%}"),
        })


_CLASSES = (
    DeviceClass(
        name="mcu_tiny",  # Arduino Nano 33 BLE: nRF52840, Cortex-M4F 64 MHz
        ram_bytes=256 * KIB, runtime_reserve_bytes=48 * KIB,
        peak_flops_per_s=64e6, efficiency=0.5, flops_sigma=0.05, compute_power_w=0.010,
        battery_j=_lipo_j(500), recharge_w=0.005,
        background_mean_fraction=0.05, background_amplitude_fraction=0.02,
        sources={
            "ram_bytes": f"[spec] nRF52840 product specification: 256 KB RAM ({_REF})",
            "runtime_reserve_bytes": "[approx] BLE SoftDevice RAM + TFLM-style interpreter "
                                     "and stacks: a few tens of KB",
            "peak_flops_per_s": "[approx] 64 MHz [spec] x 1 fp32 op per cycle (Cortex-M4F "
                                "scalar FPU)",
            "efficiency": f"[choice] 32 MFLOP/s sustained, the ~0.03 GFLOP/s of {_REF}",
            "flops_sigma": _MCU_SIGMA,
            "compute_power_w": "[approx] Nordic's ~52 uA/MHz from flash: 3.3 mA x 3 V at 64 MHz",
            **_power("[choice] 500 mAh x 3.7 V single-cell LiPo",
                     "[choice] small solar harvester, 5 mW daily average"),
            **_MCU_BG,
        }),
    DeviceClass(
        name="mcu_mid",  # STM32H743, Cortex-M7 480 MHz
        ram_bytes=1024 * KIB, runtime_reserve_bytes=64 * KIB,
        peak_flops_per_s=960e6, efficiency=0.3, flops_sigma=0.05, compute_power_w=0.33,
        battery_j=_lipo_j(2000), recharge_w=0.05,
        background_mean_fraction=0.05, background_amplitude_fraction=0.02,
        sources={
            "ram_bytes": f"[spec] STM32H743 datasheet: 1 MB RAM (TCM + SRAM); ~1 MB in {_REF}",
            "runtime_reserve_bytes": "[approx] TFLM-style runtime, stacks and Ethernet DMA "
                                     "buffers: a few tens of KB",
            "peak_flops_per_s": "[approx] 480 MHz [spec] x 2 (one fp32 FMA per cycle, M7 FPU)",
            "efficiency": f"[choice] 0.29 GFLOP/s sustained, inside 0.1-0.4 GFLOP/s of {_REF}",
            "flops_sigma": _MCU_SIGMA,
            "compute_power_w": "[approx] ~100 mA at 3.3 V in run mode at 480 MHz",
            **_power("[choice] 2000 mAh x 3.7 V single-cell LiPo",
                     "[choice] small solar panel, 50 mW daily average"),
            **_MCU_BG,
        }),
    DeviceClass(
        name="esp32",  # 2x Xtensa LX6 240 MHz, 520 KiB SRAM
        ram_bytes=520 * KIB, runtime_reserve_bytes=256 * KIB,
        peak_flops_per_s=960e6, efficiency=0.25, flops_sigma=0.05, compute_power_w=0.22,
        battery_j=_lipo_j(1000), recharge_w=0.02,
        background_mean_fraction=0.10, background_amplitude_fraction=0.05,
        sources={
            "ram_bytes": f"[spec] Espressif ESP32 datasheet: 520 KiB SRAM ({_REF})",
            "runtime_reserve_bytes": _ESP_RESERVE,
            "peak_flops_per_s": "[approx] 2 cores x 240 MHz [spec] x 2 (fp32 madd.s per cycle)",
            "efficiency": f"[choice] 0.24 GFLOP/s sustained, inside 0.1-0.5 GFLOP/s of {_REF}",
            "flops_sigma": _MCU_SIGMA,
            "compute_power_w": "[approx] Espressif datasheet: up to ~68 mA at 3.3 V, dual core "
                               "240 MHz, radio off",
            **_power("[choice] 1000 mAh x 3.7 V single-cell LiPo",
                     "[choice] small solar panel, 20 mW daily average"),
            **_WIFI_BG,
        }),
    DeviceClass(
        name="esp32_s3_psram",  # 2x Xtensa LX7 240 MHz, 512 KiB SRAM + 8 MB PSRAM
        ram_bytes=512 * KIB + 8 * MIB, runtime_reserve_bytes=256 * KIB,
        peak_flops_per_s=960e6, efficiency=0.2, flops_sigma=0.05, compute_power_w=0.30,
        battery_j=_lipo_j(1000), recharge_w=0.02,
        background_mean_fraction=0.10, background_amplitude_fraction=0.05,
        sources={
            "ram_bytes": f"[spec] ESP32-S3 datasheet: 512 KiB SRAM, plus 8 MB PSRAM ({_REF})",
            "runtime_reserve_bytes": _ESP_RESERVE,
            "peak_flops_per_s": "[approx] 2 cores x 240 MHz [spec] x 2 (fp32 FMA per cycle)",
            "efficiency": "[choice] below the ESP32's: tensors live in slower external PSRAM",
            "flops_sigma": _MCU_SIGMA,
            "compute_power_w": "[approx] dual core at 240 MHz with PSRAM active, ~90 mA x 3.3 V",
            **_power("[choice] 1000 mAh x 3.7 V single-cell LiPo",
                     "[choice] small solar panel, 20 mW daily average"),
            **_WIFI_BG,
        }),
    DeviceClass(
        name="rpi_zero2w",  # 4x Cortex-A53 1 GHz, 512 MB
        ram_bytes=512 * MIB, runtime_reserve_bytes=212 * MIB,
        peak_flops_per_s=32e9, efficiency=0.05, flops_sigma=0.15, compute_power_w=3.0,
        battery_j=None, recharge_w=0.0,
        background_mean_fraction=0.10, background_amplitude_fraction=0.05,
        sources={
            "ram_bytes": "[spec] Raspberry Pi Zero 2 W product brief: 512 MB LPDDR2",
            "runtime_reserve_bytes": f"[approx] OS + Python + torch, leaving the ~300 MB for "
                                     f"training of {_REF}",
            "peak_flops_per_s": "[approx] 4 cores x 1 GHz [spec] x 8 (4-lane fp32 NEON FMA)",
            "efficiency": f"[choice] 1.6 GFLOP/s sustained, the ~1-2 GFLOP/s of {_REF}",
            "flops_sigma": "[choice] thermal throttling differs with case and heatsink",
            "compute_power_w": "[approx] ~0.6 A at 5 V under full CPU load",
            **_MAINS,
            **_SBC_BG,
        }),
    *(DeviceClass(
        name=f"rpi4_{gib}gb",  # 4x Cortex-A72 1.5 GHz
        ram_bytes=gib * GIB, runtime_reserve_bytes=300 * MIB,
        peak_flops_per_s=48e9, efficiency=0.15, flops_sigma=0.15, compute_power_w=6.4,
        battery_j=None, recharge_w=0.0,
        background_mean_fraction=0.10, background_amplitude_fraction=0.05,
        sources={
            "ram_bytes": f"[spec] Raspberry Pi 4 product brief: {gib} GB LPDDR4 variant",
            "runtime_reserve_bytes": f"[approx] RAM minus ~300 MB is left for training ({_REF})",
            "peak_flops_per_s": "[approx] 4 cores x 1.5 GHz [spec] x 8 (A72: 4-lane fp32 FMA "
                                "per cycle, as vfpbench measures)",
            "efficiency": f"[choice] 7.2 GFLOP/s sustained, next to the ~8 GFLOP/s fp64 HPL "
                          f"[measured] in {_REF}",
            "flops_sigma": "[choice] thermal throttling differs with case and heatsink",
            "compute_power_w": "[measured] third-party stress tests draw ~6.4 W at the wall",
            **_MAINS,
            **_SBC_BG,
        }) for gib in (2, 4)),
    DeviceClass(
        name="jetson_nano",  # 128 Maxwell cores, 4 GB shared LPDDR4
        ram_bytes=4 * GIB, runtime_reserve_bytes=1536 * MIB,
        peak_flops_per_s=236e9, efficiency=0.1, flops_sigma=0.1, compute_power_w=10.0,
        battery_j=None, recharge_w=0.0,
        background_mean_fraction=0.10, background_amplitude_fraction=0.05,
        sources={
            "ram_bytes": f"[spec] NVIDIA: 4 GB LPDDR4 shared by CPU and GPU ({_REF})",
            "runtime_reserve_bytes": f"[approx] OS + CUDA + torch, leaving ~2.5 GB ({_REF})",
            "peak_flops_per_s": f"[spec] 472 GFLOP/s fp16 peak (NVIDIA); fp32 is half on "
                                f"Maxwell ({_REF})",
            "efficiency": "[choice] training is bound by 25.6 GB/s shared memory: 10 % of peak",
            "flops_sigma": "[choice] same module; power mode and cooling differ",
            "compute_power_w": f"[spec] 10 W power mode ({_REF})",
            **_MAINS,
            **_SBC_BG,
        }),
    DeviceClass(
        name="jetson_orin_nano",  # Orin Nano Super: 1024 Ampere cores, 8 GB LPDDR5
        ram_bytes=8 * GIB, runtime_reserve_bytes=2 * GIB,
        peak_flops_per_s=2.09e12, efficiency=0.15, flops_sigma=0.1, compute_power_w=25.0,
        battery_j=None, recharge_w=0.0,
        background_mean_fraction=0.10, background_amplitude_fraction=0.05,
        sources={
            "ram_bytes": f"[spec] NVIDIA: 8 GB LPDDR5, 102 GB/s ({_REF})",
            "runtime_reserve_bytes": f"[approx] OS + CUDA + torch, leaving ~6 GB ({_REF})",
            "peak_flops_per_s": "[approx] 1024 CUDA cores x 1.02 GHz x 2 (fp32 FMA); the [spec] "
                                "headline is 67 TOPS int8 sparse",
            "efficiency": "[choice] small-batch fp32 training: 15 % of peak",
            "flops_sigma": "[choice] same module; power mode and cooling differ",
            "compute_power_w": f"[spec] top of the 7-25 W power modes ({_REF})",
            **_MAINS,
            **_SBC_BG,
        }),
    _phone("phone_low", 3, 1, 128e9,
           "[approx] 8x Cortex-A53 at 2.0 GHz x 8 (4-lane fp32 NEON FMA), CPU only",
           eff=0.05, power_w=2.0, mah=4000, bg_mean=0.30, bg_amp=0.15),
    _phone("phone_mid", 6, 3, 211.2e9,
           "[approx] 4x Cortex-A78 2.4 GHz x 16 + 4x Cortex-A55 1.8 GHz x 8, CPU only",
           eff=0.08, power_w=3.0, mah=4500, bg_mean=0.25, bg_amp=0.15),
    _phone("phone_high", 12, 6, 329.6e9,
           "[approx] Cortex-X3 3.2 GHz x 32 + 4x A715 2.8 GHz x 16 + 3x A510 2.0 GHz x 8, CPU only",
           eff=0.10, power_w=5.0, mah=5000, bg_mean=0.20, bg_amp=0.10),
)

#: Every device class by name; read-only.
DEVICE_CLASSES: Mapping[str, DeviceClass] = MappingProxyType({c.name: c for c in _CLASSES})
