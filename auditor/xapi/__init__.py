"""Async client for the 3CX V20 Configuration API (XAPI) on aiohttp.

What it knows about real PBXs (see ``shared/3cx-xapi/README.md``):

* Login is OAuth2 client credentials at ``POST {url}/connect/token``. A PBX keeps one live
  token per client id: a second login invalidates the first. So logins are single-flight per
  (PBX, client id) through a :class:`TokenCache`, tokens are reused until shortly before they
  expire, and a 401 on an API call means "log in again once, then give up". Failed logins are
  never retried: repeated failures get the client's address blocked by the PBX.
* ``GetFailoverScripts()`` has no ``@odata.nextLink``: the client pages itself with
  ``$top``/``$skip``, advancing ``$skip`` by the items actually received, and asks for
  ``$count=true`` to prove the listing complete. ``$top`` above the PBX's limit (100) is
  refused with a 400 naming the limit; the client continues with that limit.
* Offset paging over a changing listing can skip or repeat items: duplicate keys or a count
  that does not match trigger a fresh listing, up to ``max_relist`` times.

Every failure leaves this package as an :class:`~auditor.errors.SourceError` subclass naming
the target (and page). Secrets and tokens are scrubbed from every message.

One module per job; this file only re-exports their public names:

``client``    :class:`XapiClient`: connection pool, login and GET exchanges, retries, the API
``tokens``    :class:`TokenCache`: tokens by (PBX, client id), single-flight login
``paging``    paging through a collection and proving the listing complete
``failures``  foreign errors and unhappy HTTP answers -> our exception tree
``answers``   what the client hands back: :class:`Page`, :class:`Listing`, :class:`SettingsAnswer`
"""

from __future__ import annotations

from auditor.xapi.answers import Listing, Page, SettingsAnswer, answer_digest
from auditor.xapi.client import (
    LOGIN_PATH,
    SCRIPTS_PATH,
    SETTINGS_PATH,
    USER_AGENT,
    ClientStats,
    XapiClient,
)
from auditor.xapi.failures import RETRY_STATUSES
from auditor.xapi.tokens import TokenCache

__all__ = [
    "LOGIN_PATH",
    "RETRY_STATUSES",
    "SCRIPTS_PATH",
    "SETTINGS_PATH",
    "USER_AGENT",
    "ClientStats",
    "Listing",
    "Page",
    "SettingsAnswer",
    "TokenCache",
    "XapiClient",
    "answer_digest",
]
