"""A 3CX V20 XAPI simulator: many PBXs in one aiohttp server, with scriptable faults.

::

    sim = Simulator([Pbx("hq", scripts=250, seed=1, states=True), Pbx("branch", scripts=3)])
    async with serve(sim) as base:                       # "http://127.0.0.1:PORT"
        hq = sim["hq"]
        # token: POST {base}/hq/connect/token  (client_id=auditor, client_secret=secret)
        # XAPI:  GET  {base}/hq/xapi/v1/Backups/Pbx.GetFailoverScripts()?$top=100&$skip=0
        hq.add_fault("status", endpoint="scripts", skip=100, status=503, times=1)
        hq.add_script("new.sh"); hq.set_state("new.sh", "Disconnected")
        ...
        assert hq.stats.max_top == 100

What each PBX answers (as in the spec ``swagger.yaml`` and the behaviour reported of real
PBXs): ``POST /connect/token`` (client credentials as form fields or HTTP Basic; one live
token per client id, minting one revokes the previous; wrong credentials -> 400
``invalid_client``), ``GET /xapi/v1/Backups/Pbx.GetFailoverScripts()`` (``$top`` <= 100,
else 400 with 3CX's message; no ``$top`` -> ``page_default`` items; ``$skip``, ``$count``,
``$filter``, ``$search``, ``$orderby`` on Filename/State; sorted by Filename) and
``GET /xapi/v1/Backups/Pbx.GetBackupFailoverSettings()``; the backups (``GET /xapi/v1/Backups``
paged like the scripts, ``Backups('{FileName}')/Pbx.GetBackupExtras()``,
``Backups/Pbx.GetBackupSettings()``, ``Backups/Pbx.GetBackupRepositorySettings()``: see
:mod:`~auditor.simulator.backups`). XAPI routes need
``Authorization: Bearer <live token>`` (else 401); errors have the OData shape
``{"error": {"code": "", "message": ...}}``; unknown routes are 404.

A PBX that is "down" closes every connection unanswered (``mode="drop"``; an in-process
server cannot refuse connections for one path prefix only) or answers 503
(``mode="status"``). The aiohttp client (3.14) resends an idempotent request (GET) once by
itself when the server disconnects, so a one-shot ``drop`` of a GET goes unnoticed by it:
use ``times=2`` or more when an aiohttp client must see the drop.

Fault rules are described in :mod:`auditor.simulator.faults`, the control API (``/_sim``,
for changing a simulator from another process) in :mod:`auditor.simulator.control`.

The package, one job per module: ``data`` (generated names and settings, their checks),
``query`` (OData query options of the listing), ``faults`` (fault rules), ``stats``
(request counters), ``scripts`` (the failover-script listing of one PBX), ``backups`` (its
backups, backup settings and repository), ``tokens`` (its
clients and tokens), ``pbx`` (a PBX put together from those, and the simulator of many),
``control`` (the ``/_sim`` API), ``app`` (the HTTP handlers), ``runner`` (serving).
A new collection of a PBX is a new module beside ``scripts``. The simulator never imports
the auditor's client, store or service: it stands for the PBX, not for the auditor.
"""

from auditor.simulator.app import (
    BACKUP_REPOSITORY_PATH,
    BACKUP_SETTINGS_PATH,
    BACKUPS_PATH,
    ODATA_CONTENT_TYPE,
    SCRIPTS_PATH,
    SETTINGS_PATH,
    SIMULATOR_KEY,
    TOKEN_PATH,
    backup_extras_path,
    make_app,
)
from auditor.simulator.data import (
    SETTINGS_FIELDS,
    DuplicateError,
    generate_filenames,
    generate_settings,
)
from auditor.simulator.faults import ACTIONS, ENDPOINTS, Fault, FaultAction, FaultEndpoint
from auditor.simulator.pbx import ManualClock, Pbx, Simulator, pbx_url
from auditor.simulator.query import top_limit_message
from auditor.simulator.runner import run, serve, tls_context
from auditor.simulator.stats import RequestRecord, Stats

__all__ = [
    "ACTIONS",
    "BACKUPS_PATH",
    "BACKUP_REPOSITORY_PATH",
    "BACKUP_SETTINGS_PATH",
    "ENDPOINTS",
    "ODATA_CONTENT_TYPE",
    "SCRIPTS_PATH",
    "SETTINGS_FIELDS",
    "SETTINGS_PATH",
    "SIMULATOR_KEY",
    "TOKEN_PATH",
    "DuplicateError",
    "Fault",
    "FaultAction",
    "FaultEndpoint",
    "ManualClock",
    "Pbx",
    "RequestRecord",
    "Simulator",
    "Stats",
    "backup_extras_path",
    "generate_filenames",
    "generate_settings",
    "make_app",
    "pbx_url",
    "run",
    "serve",
    "tls_context",
    "top_limit_message",
]
