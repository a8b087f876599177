"""Database URLs without their password: the one place credentials are taken out of a URL.

A URL reaches logs, error messages, the study row, the journal and Tune's pickled experiment
state; none of them may hold a password.  `redact` gives the URL to show (password masked as
``***``) or, with ``connectable=True``, the URL to keep (password dropped, so it still connects
and libpq supplies the password from ``PGPASSWORD`` or ``~/.pgpass``).  `scrub` takes a known
URL's password out of a driver's message that echoes it; `mask_in_text` masks the password of
any URL a message quotes, when nobody knows which URL that is.  `DEFAULT_URL` is the database
used when none is named: defined here, in the one module every layer may import cheaply.

SQLAlchemy is imported on first use, not with this module: preflight imports it on the way to
its first check and must not pay for the database layer before it needs it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: the database a study writes and every reader opens when given no URL (the commands: when
#: neither --storage nor $RKSEARCH_STORAGE names one)
DEFAULT_URL = "sqlite:///rksearch.db"

#: what stands for a password in anything shown (SQLAlchemy's own mask)
MASK = "***"

#: the password of a URL quoted in free text: ``scheme://user:PASSWORD@host``
_QUOTED_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@]+@", re.IGNORECASE)


def redact(url: str | URL, *, connectable: bool = False) -> str:
    """`url` with its password masked, safe for logs, error messages and the study row.

    ``connectable=True`` drops the password instead of masking it: a URL to store and connect
    with later, whose masked form would send ``***`` as the password.  A URL that does not even
    parse is shown as a placeholder, since nothing about it can be trusted to hold no secret.
    """
    from sqlalchemy.engine import URL, make_url

    try:
        parsed = make_url(url)
    except Exception:
        return "<unparseable database URL>"
    if not connectable:
        return parsed.render_as_string(hide_password=True)
    # URL.set(password=None) would keep the old password: build the URL again without it
    bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
                      parsed.query)
    return bare.render_as_string(hide_password=False)


def scrub(text: str, url: str | URL) -> str:
    """`text` with `url`'s password masked wherever it appears (a driver echoing it back)."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), MASK) if password else text


def mask_in_text(text: str) -> str:
    """`text` with the password of every URL it quotes masked.

    For a message whose URL is unknown (an error on its way to the terminal), where `scrub`
    cannot be asked: it needs the URL to find the password.  It matches the URL's syntax, not a
    known secret, so a password holding a raw (unescaped) ``@`` is masked only up to it.
    """
    return _QUOTED_PASSWORD.sub(rf"\g<1>{MASK}@", text)


__all__ = ["DEFAULT_URL", "MASK", "mask_in_text", "redact", "scrub"]
