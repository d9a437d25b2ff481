# snmpsim variation module: an APC PowerNet-MIB PDU with 8 outlets, for labd's tests.
#
# Records tagged `2:apcoutlet` carry `kind=sctl|rctl|rstatus[,stuck=1]` as their value:
#   sctl    sPDUOutletCtl.N                    (1.3.6.1.4.1.318.1.1.4.4.2.1.3.N)   read-write
#   rctl    rPDUOutletControlOutletCommand.N   (1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.N) read-write
#   rstatus rPDUOutletStatusOutletState.N      (1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.N) read-only
# All three objects of one outlet share one on/off state (every outlet starts on). A GET
# returns 1 (on) or 2 (off). A SET of 1 or 3 (reboot, instantaneous here) turns the outlet on,
# 2 turns it off, anything else is wrongValue; a SET on rstatus is notWritable. An outlet whose
# record says `stuck=1` accepts every SET without switching (a PDU that acknowledges but does
# not act). Every accepted SET is appended to the file named by the module option `log:FILE`:
#   1795319788.192 outlet=3 kind=rctl value=2 -> off
import time

from pysnmp.proto import rfc1902
from pysnmp.smi import error

STATE = {}
SETTINGS = {}


def init(**context):
    options = context.get("options") or ""
    for part in options.split(","):
        if ":" in part:
            key, val = part.split(":", 1)
            SETTINGS[key] = val


def _record(value):
    fields = {}
    for part in str(value).split(","):
        if "=" in part:
            key, val = part.split("=", 1)
            fields[key.strip()] = val.strip()
    return fields


def _log(line):
    path = SETTINGS.get("log")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def variate(oid, tag, value, **context):
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    record = _record(value)
    kind = record.get("kind", "rctl")
    outlet = int(oid[-1])
    on = STATE.setdefault(outlet, True)
    if context["setFlag"]:
        idx = max(0, context["varsTotal"] - context["varsRemaining"] - 1)
        if kind == "rstatus":
            raise error.NotWritableError(name=oid, idx=idx)
        new = int(context["origValue"])
        if new not in (1, 2, 3):
            raise error.WrongValueError(name=oid, idx=idx)
        if record.get("stuck") == "1":
            result = "stuck"
        else:
            on = new != 2
            STATE[outlet] = on
            result = "on" if on else "off"
        _log("%.3f outlet=%d kind=%s value=%d -> %s" % (time.time(), outlet, kind, new, result))
    return oid, tag, rfc1902.Integer32(1 if on else 2)


def shutdown(**context):
    pass
