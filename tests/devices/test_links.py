"""Link classes: keys, citations, LoRaWAN figures and the reference's consequences."""

import dataclasses
from types import MappingProxyType

import pytest

from devices import GATEWAY_KINDS, LINK_CLASSES, LINK_FIGURES, LinkClass, framed_transfer_time_s

TAGS = ("[spec]", "[measured]", "[approx]", "[choice]")


def test_keys_exactly():
    assert set(LINK_CLASSES) == {"ethernet", "wifi", "lte", "lte_m", "nb_iot", "lorawan",
                                 "ble_gateway"}
    assert isinstance(LINK_CLASSES, MappingProxyType)
    for name, link in LINK_CLASSES.items():
        assert link.name == name
        assert link.gateway_kind in GATEWAY_KINDS


def test_every_numeric_figure_is_cited_with_a_tag():
    numeric = ({f.name for f in dataclasses.fields(LinkClass)}
               - {"name", "gateway_kind", "sources"})
    assert LINK_FIGURES == numeric
    for link in LINK_CLASSES.values():
        assert set(link.sources) == numeric, link.name
        for key, text in link.sources.items():
            assert text.startswith(TAGS), (link.name, key, text)


def test_reference_ranges():
    lte = LINK_CLASSES["lte"]
    assert 2e6 <= lte.up_bit_per_s <= 20e6 and 5e6 <= lte.down_bit_per_s <= 50e6
    assert 0.03 <= lte.latency_s <= 0.08
    for name in ("ethernet", "wifi"):
        link = LINK_CLASSES[name]
        assert 10e6 <= link.up_bit_per_s <= 300e6 and 0.001 <= link.latency_s <= 0.02
    nb = LINK_CLASSES["nb_iot"]
    assert 5e3 <= nb.up_bit_per_s <= 50e3 and 1.6 <= nb.latency_s <= 10
    assert 0.05 <= LINK_CLASSES["lte_m"].latency_s <= 0.2
    assert 100e3 <= LINK_CLASSES["ble_gateway"].up_bit_per_s <= 1.4e6


def test_lorawan_figures():
    lora = LINK_CLASSES["lorawan"]
    assert (lora.up_bit_per_s, lora.duty_cycle) == (5.5e3, 0.01)
    assert (lora.max_frame_payload_bytes, lora.frame_overhead_bytes) == (242, 13)
    assert lora.gateway_kind == "lora_gateway"
    for name, link in LINK_CLASSES.items():
        if name != "lorawan":
            assert link.duty_cycle == 1.0 and link.max_frame_payload_bytes is None


def _uplink_s(link, size_bytes):
    return framed_transfer_time_s(size_bytes, link.up_bit_per_s, link.duty_cycle,
                                  link.max_frame_payload_bytes, link.frame_overhead_bytes)


def test_dense_model_over_lorawan_takes_days_but_seed_trick_fits():
    lora = LINK_CLASSES["lorawan"]
    assert _uplink_s(lora, 1_000_000) / 3600 > 40  # the reference's "about 40 hours"
    # 300 B: frames of 242 and 58 B, each + 13 B: (8 * 326 * 100 - 8 * 71 * 99) / 5500 s.
    assert _uplink_s(lora, 300) == pytest.approx((260_800 - 56_232) / 5500)
    assert _uplink_s(lora, 300) < 60


@pytest.mark.parametrize("changes, field", [
    ({"up_bit_per_s": 0.0}, "up_bit_per_s"),
    ({"down_bit_per_s": -1.0}, "down_bit_per_s"),
    ({"bandwidth_sigma": -0.1}, "bandwidth_sigma"),
    ({"latency_s": -1.0}, "latency_s"),
    ({"loss_prob": 1.0}, "loss_prob"),
    ({"duty_cycle": 0.0}, "duty_cycle"),
    ({"max_frame_payload_bytes": 0}, "max_frame_payload_bytes"),
    ({"max_frame_payload_bytes": None}, "frame_overhead_bytes"),  # headers without framing
    ({"frame_overhead_bytes": -1}, "frame_overhead_bytes"),
    ({"tx_j_per_byte": -1e-9}, "tx_j_per_byte"),
    ({"gateway_kind": "pigeon"}, "gateway_kind"),
])
def test_invalid_fields(changes, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(LINK_CLASSES["lorawan"], **changes)
