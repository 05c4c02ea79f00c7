"""What a database URL holds: every password form masked, the secrets listed for scrubbing,
the driver's parameters routed as libpq means them. Table tests and hypothesis."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditor.config import display_url, url_secrets
from auditor.store import driver_url
from auditor.store.engine import _asyncpg_args


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:////var/lib/a.db", "sqlite:////var/lib/a.db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40w@h:5433/db", "postgresql://u:***@h:5433/db"),
        ("postgresql://u@h/db?password=pw", "postgresql://u@h/db?password=***"),
        (
            "postgresql://u:a@h/db?password=b&password=c&sslmode=require",
            "postgresql://u:***@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db?sslpassword=k", "postgresql://u@h/db?sslpassword=***"),
        ("postgresql://u@h/db?PassWord=x", "postgresql://u@h/db?PassWord=***"),
        # A path is not a secret: shown (percent-encoded, as SQLAlchemy renders a query).
        (
            "postgresql://u@h/db?passfile=/etc/pgpass",
            "postgresql://u@h/db?passfile=%2Fetc%2Fpgpass",
        ),
        ("postgresql://u:pw@h/db?x", "postgresql://u:***@h/db"),
        ("not a url", "<invalid database URL>"),
    ],
)
def test_display_url_masks_every_password_form(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_url_secrets_lists_each_form_as_written_and_decoded() -> None:
    found = url_secrets("postgresql://u:p%40w@h/db?password=q%2Bq&sslpassword=k k&sslmode=disable")
    assert {"p@w", "p%40w", "q+q", "q%2Bq", "k k", "k+k", "k%20k"} <= set(found)
    assert "disable" not in found
    assert list(found) == sorted(found, key=len, reverse=True)


def test_the_driver_gets_libpq_parameters_in_a_connection_string() -> None:
    url = driver_url(
        "postgresql://u:a@h/db?password=b&sslmode=verify-full&sslrootcert=/ca.crt&ssl_min_protocol_version=TLSv1.3"
    )
    assert url.password == "b"  # the query's password wins, as it did for the driver
    assert "password" not in url.query
    bare, args = _asyncpg_args(url)
    assert dict(bare.query) == {}
    dsn = str(args["dsn"])
    assert dsn.startswith("postgresql://?")
    assert dict(parse_qsl(dsn.split("?", 1)[1], strict_parsing=True)) == {
        "sslmode": "verify-full",
        "sslrootcert": "/ca.crt",
        "ssl_min_protocol_version": "TLSv1.3",
    }
    assert args["timeout"] > 0
    # asyncpg's own keywords stay keywords.
    bare, args = _asyncpg_args(driver_url("postgresql://u@h/db?ssl=require"))
    assert dict(bare.query) == {"ssl": "require"}
    assert "dsn" not in args


_SECRET = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=24
).map(lambda text: "Zq7" + text)


@given(user_part=_SECRET, query=_SECRET, ssl=_SECRET)
def test_no_password_form_survives_display(user_part: str, query: str, ssl: str) -> None:
    url = (
        f"postgresql://auditor:{quote(user_part, safe='')}@db.example.com:5432/audit"
        f"?password={quote(query, safe='')}&sslpassword={quote(ssl, safe='')}&sslmode=require"
    )
    shown = display_url(url)
    assert shown.startswith("postgresql://auditor:***@db.example.com:5432/audit?")
    assert "Zq7" not in shown
    for secret in (user_part, query, ssl):
        assert secret in url_secrets(url)
