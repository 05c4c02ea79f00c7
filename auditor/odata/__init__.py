"""OData query options, checked locally before any request reaches a PBX.

Pure: no I/O, no HTTP. The client calls :func:`validate_top`, :func:`validate_skip`,
:func:`quote_search` and :func:`check_filter` so that a bad option fails fast with one
readable line (a :class:`~auditor.errors.QueryError`) instead of an HTTP 400 from every
PBX of a fleet. The built-in simulator uses :meth:`Filter.matches` and
:func:`search_matches` to answer ``$filter`` and ``$search`` itself.

One module per job; this file only re-exports their public names:

``options``   ``$top``, ``$skip`` and ``$search`` (validation, quoting, the simulator's search)
``syntax``    the ``$filter`` syntax tree (one dataclass per node) and :func:`dump`
``lexer``     ``$filter`` text -> tokens
``parser``    tokens -> :class:`Filter` (the grammar, ``FUNCTIONS``, nesting limits)
``evaluate``  a syntax tree against one item (the simulator's subset)
``messages``  how values and filter texts are shown in one-line errors
"""

from __future__ import annotations

from auditor.odata.options import (
    INT64_MAX,
    quote_search,
    search_matches,
    unquote_search,
    validate_skip,
    validate_top,
)
from auditor.odata.parser import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_NESTING,
    Filter,
    check_filter,
    parse_filter,
)
from auditor.odata.syntax import (
    BinOp,
    BoolOp,
    Call,
    Lambda,
    ListExpr,
    Literal,
    Member,
    Negate,
    Node,
    Not,
    TypeName,
    dump,
)

__all__ = [
    "FUNCTIONS",
    "INT64_MAX",
    "MAX_DEPTH",
    "MAX_NESTING",
    "BinOp",
    "BoolOp",
    "Call",
    "Filter",
    "Lambda",
    "ListExpr",
    "Literal",
    "Member",
    "Negate",
    "Node",
    "Not",
    "TypeName",
    "check_filter",
    "dump",
    "parse_filter",
    "quote_search",
    "search_matches",
    "unquote_search",
    "validate_skip",
    "validate_top",
]
