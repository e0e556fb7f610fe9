# A stand-in for terraform, used by benches/fanout.rs. It answers the command lines the gateway
# runs (init, plan, apply, output, state list, destroy) and prints terraform-style `-json` lines.
# `apply` prints LINES lines at RATE lines/s, each `@message` starting with
# "stamp <unix nanos> seq <n>": the wall-clock time just before the line was written, so a
# reader can measure how late it got the line. Every line is written with os.write (no
# buffering). When a write blocks (the reader is not draining the pipe), the schedule moves
# by that long, as terraform's would, so a slow reader makes the run longer.
#
# The bench writes this file next to control files (CTL below):
#   CTL/config.json           {"rate": lines per second, "lines": number of apply lines}
#   CTL/gate/<twin id>        while it exists, `init` waits (clients connect meanwhile)
#   CTL/park/<twin id>        while it exists, `apply` waits before printing anything
#   CTL/stats/<twin>-<cmd>-<pid>.json   written at exit: timings of this invocation, the time
#                             spent in writes that took over 1 ms, and the most bytes ever
#                             waiting unread in the pipe before a write
# The twin id comes from TERRASTREAM_TWIN_ID (set by the gateway); run bare it is "bare".
import array
import fcntl
import json
import os
import sys
import termios
import time

CTL = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(CTL, "config.json")) as f:
    CONFIG = json.load(f)

ARGS = sys.argv[1:]
CMD = ARGS[0] if ARGS else ""
TWIN = os.environ.get("TERRASTREAM_TWIN_ID", "bare")
STATS = {
    "cmd": CMD,
    "twin": TWIN,
    "start_ns": time.time_ns(),
    "hold_ns": 0,
    "lines": 0,
    "blocked_ns": 0,
    "max_write_ns": 0,
    "max_pipe_bytes": 0,
    "first_line_ns": 0,
    "last_line_ns": 0,
}


def hold(kind):
    path = os.path.join(CTL, kind, TWIN)
    started = time.time_ns()
    while os.path.exists(path):
        time.sleep(0.002)
    STATS["hold_ns"] += time.time_ns() - started


def rfc3339(ns):
    secs = ns // 1_000_000_000
    micros = (ns % 1_000_000_000) // 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%06dZ" % micros


def unread_bytes():
    """Bytes written to stdout that its reader has not read yet (a pipe's fill)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(1, termios.FIONREAD, count, True)
    except OSError:
        return 0
    return count[0]


def write_all(data):
    """Writes to stdout (fd 1), returning how long the write took in ns."""
    STATS["max_pipe_bytes"] = max(STATS["max_pipe_bytes"], unread_bytes())
    started = time.perf_counter_ns()
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]
    return time.perf_counter_ns() - started


def emit(message, kind="log", level="info", extra=""):
    """One `-json` line; `message` may contain {stamp}, replaced by the time of writing."""
    ns = time.time_ns()
    text = message.replace("{stamp}", "stamp %d" % ns)
    line = '{"@level":"%s","@message":%s,"@module":"terraform.ui","@timestamp":"%s","type":"%s"%s}\n' % (
        level,
        json.dumps(text),
        rfc3339(ns),
        kind,
        extra,
    )
    took = write_all(line.encode())
    STATS["lines"] += 1
    STATS["max_write_ns"] = max(STATS["max_write_ns"], took)
    if not STATS["first_line_ns"]:
        STATS["first_line_ns"] = ns
    STATS["last_line_ns"] = ns
    return took


def plain(text):
    write_all((text + "\n").encode())


def version():
    emit("Terraform 1.15.5 (stand-in)", "version", extra=',"terraform":"1.15.5","ui":"1.2"')


def init():
    hold("gate")
    plain("Initializing the backend...")
    plain("Initializing provider plugins...")
    plain("Terraform has been successfully initialized!")


def plan():
    version()
    for i in range(12):
        addr = "sandbox_resource.object[%d]" % i
        emit(
            "%s: Plan to create" % addr,
            "planned_change",
            extra=',"change":{"resource":{"addr":"%s","resource_type":"sandbox_resource"},"action":"create"}'
            % addr,
        )
    emit("Plan: 12 to add, 0 to change, 0 to destroy.", "change_summary",
         extra=',"changes":{"add":12,"change":0,"remove":0,"operation":"plan"}')
    for arg in ARGS:
        if arg.startswith("-out="):
            with open(arg[len("-out="):], "w") as f:
                f.write("stand-in plan\n")


def apply():
    hold("park")
    version()
    rate = float(CONFIG["rate"])
    lines = int(CONFIG["lines"])
    interval = 1.0 / rate
    deadline = time.monotonic()
    for n in range(1, lines + 1):
        addr = 'sandbox_resource.line[\\"line-%d\\"]' % (n % 12)
        took = emit(
            '{stamp} seq %d: sandbox_resource.line["line-%d"]: Still creating... [%ds elapsed]'
            % (n, n % 12, int(n * interval)),
            "apply_progress",
            extra=',"hook":{"resource":{"addr":"%s","resource_type":"sandbox_resource"},"action":"create","elapsed_seconds":%d}'
            % (addr, int(n * interval)),
        )
        if took > 1_000_000:
            # Blocked on a full pipe: terraform's progress waits for its output too.
            STATS["blocked_ns"] += took
            deadline += took / 1e9
        deadline += interval
        pause = deadline - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    emit("Apply complete! Resources: 12 added, 0 changed, 0 destroyed.", "change_summary",
         extra=',"changes":{"add":12,"change":0,"remove":0,"operation":"apply"}')


def destroy():
    version()
    emit("Destroy complete! Resources: 0 destroyed.", "change_summary",
         extra=',"changes":{"add":0,"change":0,"remove":0,"operation":"destroy"}')


def main():
    if CMD == "init":
        init()
    elif CMD == "plan":
        plan()
    elif CMD == "apply":
        apply()
    elif CMD == "output":
        write_all(b"{}\n")
    elif CMD == "state":
        pass
    elif CMD == "destroy":
        destroy()
    elif CMD == "version":
        plain("Terraform v1.15.5 (stand-in)")
    else:
        sys.stderr.write("stand-in terraform: unknown command %r\n" % CMD)
        return 1
    return 0


code = main()
STATS["end_ns"] = time.time_ns()
os.makedirs(os.path.join(CTL, "stats"), exist_ok=True)
with open(os.path.join(CTL, "stats", "%s-%s-%d.json" % (TWIN, CMD, os.getpid())), "w") as f:
    json.dump(STATS, f)
sys.exit(code)
