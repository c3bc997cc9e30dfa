"""Link classes: the radio or wire a device uses to reach its gateway, every figure cited.

Rates are median *effective application* throughput in SI bits per second (1 kbit = 1000 bit,
8 bits per byte), except where framing is modelled (LoRaWAN): there the rate is the PHY bit
rate and headers are added per frame by ``physics.framed_transfer_time_s``. Per-device spread
is lognormal with median 1 (``*_sigma``). Tags as in ``shared/reference/devices.md``.

``tx_j_per_byte`` is the incremental radio energy per byte sent or received; the power models
behind the Wi-Fi and LTE figures also have a fixed base and tail power, which is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Mapping

from devices._checks import (
    check_finite_nonneg,
    check_int_at_least,
    check_positive,
    check_sources,
    check_unit_closed_open,
    check_unit_open_closed,
)

#: The gateway kinds a link can lead to (the network layer decides what each means).
GATEWAY_KINDS = frozenset({"switch", "access_point", "cell", "lora_gateway", "ble_gateway"})


@dataclass(frozen=True, slots=True)
class LinkClass:
    """One kind of link. ``sources`` cites every numeric field (see ``LINK_FIGURES``).

    ``loss_prob`` is per transmission attempt, in ``[0, 1)``; ``duty_cycle`` in ``(0, 1]``.
    ``max_frame_payload_bytes`` None means no framing, and then ``frame_overhead_bytes`` is 0.
    """

    name: str
    up_bit_per_s: float
    down_bit_per_s: float
    bandwidth_sigma: float
    latency_s: float
    latency_sigma: float
    loss_prob: float
    duty_cycle: float
    max_frame_payload_bytes: int | None
    frame_overhead_bytes: int
    tx_j_per_byte: float
    gateway_kind: str
    sources: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        check_positive("up_bit_per_s", self.up_bit_per_s)
        check_positive("down_bit_per_s", self.down_bit_per_s)
        check_finite_nonneg("bandwidth_sigma", self.bandwidth_sigma)
        check_finite_nonneg("latency_s", self.latency_s)
        check_finite_nonneg("latency_sigma", self.latency_sigma)
        check_unit_closed_open("loss_prob", self.loss_prob)
        check_unit_open_closed("duty_cycle", self.duty_cycle)
        check_int_at_least("frame_overhead_bytes", self.frame_overhead_bytes, 0)
        if self.max_frame_payload_bytes is None:
            if self.frame_overhead_bytes != 0:
                raise ValueError("frame_overhead_bytes must be 0 when max_frame_payload_bytes "
                                 f"is None, got {self.frame_overhead_bytes}")
        else:
            check_int_at_least("max_frame_payload_bytes", self.max_frame_payload_bytes, 1)
        check_finite_nonneg("tx_j_per_byte", self.tx_j_per_byte)
        if self.gateway_kind not in GATEWAY_KINDS:
            raise ValueError(f"gateway_kind must be one of {sorted(GATEWAY_KINDS)}, "
                             f"got {self.gateway_kind!r}")
        check_sources(self.sources, LINK_FIGURES)
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))


#: The numeric fields of ``LinkClass``; each must be cited in ``sources``.
LINK_FIGURES = frozenset(f.name for f in fields(LinkClass)) - {"name", "gateway_kind", "sources"}

_REF = "shared/reference/devices.md"
_NO_DUTY = "[choice] no regulatory duty-cycle limit"
_UNFRAMED = {"max_frame_payload_bytes": "[choice] no framing limit: rate is effective throughput",
             "frame_overhead_bytes": "[choice] headers are inside the effective rate"}
_HUANG = "Huang et al., MobiSys 2012, LTE/Wi-Fi power model"


def _rate(text: str) -> dict[str, str]:
    return {"up_bit_per_s": text, "down_bit_per_s": text}


_LINKS = (
    LinkClass(
        name="ethernet", up_bit_per_s=100e6, down_bit_per_s=100e6, bandwidth_sigma=0.3,
        latency_s=0.001, latency_sigma=0.3, loss_prob=1e-4, duty_cycle=1.0,
        max_frame_payload_bytes=None, frame_overhead_bytes=0, tx_j_per_byte=2.4e-8,
        gateway_kind="switch",
        sources={
            **_rate(f"[choice] Fast Ethernet class, inside the 10-300 Mbit/s of {_REF}"),
            "bandwidth_sigma": "[choice] shared switches and hosts: modest spread",
            "latency_s": f"[approx] low end of 1-20 ms ({_REF})",
            "latency_sigma": "[choice] modest spread",
            "loss_prob": "[choice] wired links rarely drop frames",
            "duty_cycle": _NO_DUTY, **_UNFRAMED,
            "tx_j_per_byte": "[approx] ~0.3 W Fast Ethernet PHY moving 12.5 MB/s",
        }),
    LinkClass(
        name="wifi", up_bit_per_s=20e6, down_bit_per_s=50e6, bandwidth_sigma=0.6,
        latency_s=0.005, latency_sigma=0.5, loss_prob=0.01, duty_cycle=1.0,
        max_frame_payload_bytes=None, frame_overhead_bytes=0, tx_j_per_byte=2.3e-6,
        gateway_kind="access_point",
        sources={
            "up_bit_per_s": f"[choice] inside 10-300 Mbit/s effective ({_REF}); uplink slower",
            "down_bit_per_s": f"[choice] inside 10-300 Mbit/s effective ({_REF})",
            "bandwidth_sigma": "[choice] +-2 sigma spans ~15-170 Mbit/s down: signal and "
                               "contention vary",
            "latency_s": f"[approx] inside 1-20 ms ({_REF})",
            "latency_sigma": "[choice] +-2 sigma spans ~2-14 ms",
            "loss_prob": "[choice] 1 % of attempts lost to interference",
            "duty_cycle": _NO_DUTY, **_UNFRAMED,
            "tx_j_per_byte": f"[approx] ~0.28 uJ/bit uplink slope of the Wi-Fi model in {_HUANG}",
        }),
    LinkClass(
        name="lte", up_bit_per_s=8e6, down_bit_per_s=20e6, bandwidth_sigma=0.6,
        latency_s=0.05, latency_sigma=0.25, loss_prob=0.01, duty_cycle=1.0,
        max_frame_payload_bytes=None, frame_overhead_bytes=0, tx_j_per_byte=3.5e-6,
        gateway_kind="cell",
        sources={
            "up_bit_per_s": f"[choice] inside 2-20 Mbit/s up ({_REF}; Ookla open data)",
            "down_bit_per_s": f"[choice] inside 5-50 Mbit/s down ({_REF}; Ookla open data)",
            "bandwidth_sigma": "[choice] +-2 sigma spans ~2.4-26 Mbit/s up",
            "latency_s": f"[approx] inside 30-80 ms ({_REF})",
            "latency_sigma": "[choice] +-2 sigma spans ~30-82 ms",
            "loss_prob": "[choice] 1 % of attempts lost after HARQ",
            "duty_cycle": _NO_DUTY, **_UNFRAMED,
            "tx_j_per_byte": f"[approx] ~0.44 uJ/bit uplink slope of the LTE model in {_HUANG}",
        }),
    LinkClass(
        name="lte_m", up_bit_per_s=1e6, down_bit_per_s=1e6, bandwidth_sigma=0.4,
        latency_s=0.1, latency_sigma=0.35, loss_prob=0.02, duty_cycle=1.0,
        max_frame_payload_bytes=None, frame_overhead_bytes=0, tx_j_per_byte=4e-6,
        gateway_kind="cell",
        sources={
            **_rate(f"[approx] ~1 Mbit/s ({_REF})"),
            "bandwidth_sigma": "[choice] coverage-enhancement repetitions lower some devices",
            "latency_s": f"[approx] geometric middle of 50-200 ms ({_REF})",
            "latency_sigma": "[choice] +-2 sigma spans 50-200 ms: ln(4) / 4",
            "loss_prob": "[choice] 2 % of attempts lost",
            "duty_cycle": _NO_DUTY, **_UNFRAMED,
            "tx_j_per_byte": "[approx] ~0.5 W module power at 23 dBm moving 125 kB/s",
        }),
    LinkClass(
        name="nb_iot", up_bit_per_s=16e3, down_bit_per_s=16e3, bandwidth_sigma=0.58,
        latency_s=4.0, latency_sigma=0.46, loss_prob=0.02, duty_cycle=1.0,
        max_frame_payload_bytes=None, frame_overhead_bytes=0, tx_j_per_byte=3.5e-4,
        gateway_kind="cell",
        sources={
            **_rate(f"[approx] geometric middle of the practical 5-50 kbit/s ({_REF}); "
                    f"Rel-13 peaks are ~26 down / ~62 up"),
            "bandwidth_sigma": "[choice] +-2 sigma spans 5-50 kbit/s: ln(10) / 4",
            "latency_s": f"[approx] geometric middle of 1.6-10 s ({_REF})",
            "latency_sigma": "[choice] +-2 sigma spans 1.6-10 s: ln(6.25) / 4",
            "loss_prob": "[choice] 2 % of attempts lost",
            "duty_cycle": _NO_DUTY, **_UNFRAMED,
            "tx_j_per_byte": "[approx] ~0.7 W module power at 23 dBm moving 2 kB/s",
        }),
    LinkClass(
        name="lorawan", up_bit_per_s=5.5e3, down_bit_per_s=5.5e3, bandwidth_sigma=0.3,
        latency_s=1.0, latency_sigma=0.0, loss_prob=0.1, duty_cycle=0.01,
        max_frame_payload_bytes=242, frame_overhead_bytes=13, tx_j_per_byte=2.1e-4,
        gateway_kind="lora_gateway",
        sources={
            **_rate(f"[spec] EU868 DR5 (SF7, 125 kHz) ~5.5 kbit/s PHY rate ({_REF}); DR0 is "
                    f"~250 bit/s: model far devices as a separate class"),
            "bandwidth_sigma": "[choice] ADR keeps most devices near DR5",
            "latency_s": f"[spec] RX1 window opens 1 s after an uplink ({_REF})",
            "latency_sigma": "[choice] the RX1 delay is fixed",
            "loss_prob": "[choice] 10 %: ALOHA collisions, unconfirmed uplinks",
            "duty_cycle": f"[spec] 1 % duty cycle in the EU868 sub-band ({_REF})",
            "max_frame_payload_bytes": f"[spec] 242 B application payload at DR5 ({_REF})",
            "frame_overhead_bytes": "[spec] LoRaWAN 1.0 MAC: MHDR 1 + FHDR 7 + FPort 1 + MIC 4",
            "tx_j_per_byte": "[approx] SX127x at 14 dBm ~44 mA x 3.3 V moving 687.5 B/s",
        }),
    LinkClass(
        name="ble_gateway", up_bit_per_s=500e3, down_bit_per_s=500e3, bandwidth_sigma=0.5,
        latency_s=0.015, latency_sigma=0.4, loss_prob=0.01, duty_cycle=1.0,
        max_frame_payload_bytes=None, frame_overhead_bytes=0, tx_j_per_byte=2.3e-7,
        gateway_kind="ble_gateway",
        sources={
            **_rate(f"[choice] inside hundreds of kbit/s .. ~1.4 Mbit/s application "
                    f"throughput ({_REF})"),
            "bandwidth_sigma": "[choice] PHY (1M/2M), data-length extension and interval vary",
            "latency_s": f"[approx] two 7.5 ms connection intervals ({_REF})",
            "latency_sigma": "[choice] connection intervals differ by gateway",
            "loss_prob": "[choice] 1 %: link-layer retries hide most losses",
            "duty_cycle": _NO_DUTY, **_UNFRAMED,
            "tx_j_per_byte": "[approx] nRF52840 radio at 0 dBm ~4.8 mA x 3 V moving 62.5 kB/s",
        }),
)

#: Every link class by name; read-only.
LINK_CLASSES: Mapping[str, LinkClass] = MappingProxyType({c.name: c for c in _LINKS})
