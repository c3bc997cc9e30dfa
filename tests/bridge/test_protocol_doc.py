"""The annotated frame in docs/protocol.md, regenerated here: ``python -m tests.bridge.test_protocol_doc``
prints it."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from fleet.bridge import protocol
from fleet.bridge.protocol import decode, encode
from tests.bridge.protocol_cases import same

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


EXAMPLE = ("update", {"task_id": 7, "kind": "delta", "num_samples": 32, "compute_s": 1.5,
                      "peak_memory_bytes": 200000, "train_loss": 0.25,
                      "delta": np.array([0.5, -0.0, -2.0], np.float32)})
_INT_FORMATS = {0xCC: ("uint8", ">B"), 0xCD: ("uint16", ">H"), 0xCE: ("uint32", ">I"), 0xCF: ("uint64", ">Q"),
                0xD0: ("int8", ">b"), 0xD1: ("int16", ">h"), 0xD2: ("int32", ">i"), 0xD3: ("int64", ">q"),
                0xCA: ("float32", ">f"), 0xCB: ("float64", ">d")}
_LENGTHS = {0xD9: ("str8", 1), 0xDA: ("str16", 2), 0xDB: ("str32", 4), 0xC4: ("bin8", 1), 0xC5: ("bin16", 2),
            0xC6: ("bin32", 4), 0xDC: ("array16", 2), 0xDD: ("array32", 4), 0xDE: ("map16", 2), 0xDF: ("map32", 4)}


def annotate(frame: bytes) -> str:
    """One line per msgpack item of ``frame``: offset, bytes, msgpack format and value, meaning."""
    rows, pos, dtype = [], 0, None

    def item(meaning: str):
        nonlocal pos, dtype
        start, b = pos, frame[pos]
        pos += 1
        count, value = None, None
        if b <= 0x7F:
            what, value = f"fixint {b}", b
        elif b <= 0x8F or 0x90 <= b <= 0x9F:
            count = b & 0x0F
            what = f"{'fixmap' if b <= 0x8F else 'fixarray'}({count})"
        elif 0xA0 <= b <= 0xBF or b in _LENGTHS:
            name, width = ("fixstr", 0) if b <= 0xBF else _LENGTHS[b]
            n = b & 0x1F if b <= 0xBF else int.from_bytes(frame[pos:pos + width], "big")
            pos += width
            if name.startswith(("array", "map")):
                count, what = n, f"{name}({n})"
            else:
                payload = frame[pos:pos + n]
                pos += n
                value = payload.decode() if "str" in name else payload
                what = f'{name}({n}) "{value}"' if "str" in name else f"{name}({n})"
                if "bin" in name and dtype is not None:
                    shown = ", ".join(repr(x) for x in np.frombuffer(payload, protocol.DTYPES[dtype]).tolist())
                    meaning += f" = {shown} ({dtype}, little-endian)"
        elif b in _INT_FORMATS:
            name, fmt = _INT_FORMATS[b]
            size = struct.calcsize(fmt)
            value = struct.unpack(fmt, frame[pos:pos + size])[0]
            pos += size
            what = f"{name} {value}"
        else:
            what = {0xC0: "nil", 0xC2: "false", 0xC3: "true"}.get(b, f"negative fixint {b - 256}")
        rows.append((start, frame[start:pos], what, meaning))
        if count is not None and what.startswith(("fixmap", "map")):
            for _ in range(count):
                key = item("key")
                item(key if meaning in ("body", "") else f"{meaning}.{key}")
        elif count is not None:
            for i in range(count):
                item(("version", "kind", "body")[i] if meaning == "envelope" else f"{meaning}[{i}]")
        if meaning.endswith("dtype"):
            dtype = value
        return value

    item("envelope")
    lines = [f"frame: {len(frame)} bytes", "", f"{'offset':>6}  {'bytes':<35}  {'msgpack':<30}  meaning"]
    for start, raw, what, meaning in rows:
        for j in range(0, len(raw), 12):
            cols = (what, meaning) if j == 0 else ("", "")
            lines.append(f"{start + j:>6}  {raw[j:j + 12].hex(' '):<35}  {cols[0]:<30}  {cols[1]}".rstrip())
    lines += ["", "the same frame as one hex string:", ""]
    lines += [frame.hex()[i:i + 96] for i in range(0, 2 * len(frame), 96)]
    return "\n".join(lines)


def example_block() -> str:
    return annotate(encode(*EXAMPLE))


def test_the_annotated_frame_in_the_doc_is_what_encode_writes():
    text = DOC.read_text()
    found = re.search(r"<!-- example:begin -->\n```text\n(.*?)\n```\n<!-- example:end -->", text, re.S)
    assert found, "docs/protocol.md lost its example markers"
    assert found.group(1) == example_block(), \
        "docs/protocol.md is out of date: replace its example with `python -m tests.bridge.test_protocol`"
    frame = bytes.fromhex("".join(found.group(1).split("one hex string:")[1].split()))
    assert same(dict(decode(frame).body), EXAMPLE[1])
    assert encode("heartbeat", {"sent_s": 12.5}).hex(" ") in text  # the ZMTP section's heartbeat


if __name__ == "__main__":
    print(example_block())

