"""Device traces in FedScale's format as a source of simulated devices (docs/traces.md).

Read a capacity file (client -> ms per sample, kbit/s) and a behaviour file (client -> active and inactive
intervals, ``finish_time``) from a pickle (through a reader that builds plain data only), JSON or CSV;
check every record (``TraceError``: one line naming the file, client and field); map the clients onto the
device model (``trace_fleet``); and write any fleet back in the same format (``fleet_records``,
``write_records``). numpy and the standard library only, like the rest of ``devices``.
"""

from devices.traces.errors import TraceError, shown
from devices.traces.export import ALWAYS_ON_PERIOD_S, fleet_records, intervals_of, write_records
from devices.traces.files import MAX_TRACE_BYTES, TRACE_SUFFIXES, read_trace_file
from devices.traces.load import PAIRINGS, SELECTIONS, load_traces, select_clients
from devices.traces.mapping import BIT_PER_KBIT, MS_PER_S, TraceFleet, flops_per_s_of, trace_fleet
from devices.traces.periodic import PeriodicIntervals
from devices.traces.records import Behaviour, DeviceTrace, behaviour_records, capacity_records
from devices.traces.unpickle import PlainUnpickler, load_plain

__all__ = [
    "ALWAYS_ON_PERIOD_S",
    "BIT_PER_KBIT",
    "MAX_TRACE_BYTES",
    "MS_PER_S",
    "PAIRINGS",
    "SELECTIONS",
    "TRACE_SUFFIXES",
    "Behaviour",
    "DeviceTrace",
    "PeriodicIntervals",
    "PlainUnpickler",
    "TraceError",
    "TraceFleet",
    "behaviour_records",
    "capacity_records",
    "fleet_records",
    "flops_per_s_of",
    "intervals_of",
    "load_plain",
    "load_traces",
    "read_trace_file",
    "select_clients",
    "shown",
    "trace_fleet",
    "write_records",
]
