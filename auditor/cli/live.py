"""The commands that talk to a live PBX and record nothing: ``scripts``.

It never opens the store. aiohttp (through ``auditor.xapi``) is imported only inside the
command, never at module level.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from auditor.cli.common import (
    EXIT_OK,
    PBX_SECRETS,
    check_targets,
    load,
    non_negative,
    out,
    print_items_table,
    print_json,
)
from auditor.errors import QueryError

if TYPE_CHECKING:
    from auditor.cli.common import Commands
    from auditor.config import Loaded


async def _scripts(args: argparse.Namespace, loaded: Loaded) -> dict[str, Any]:
    from auditor.xapi import XapiClient

    target = loaded.settings.target(args.target)
    async with XapiClient(target) as client:
        if args.all:
            listing = await client.list_failover_scripts(search=args.search, filter=args.filter)
            return {
                "target": target.name,
                "count": listing.reported_count,
                "pages": listing.pages,
                "items": list(listing.items),
            }
        page = await client.get_failover_scripts(
            top=args.top if args.top is not None else target.page_size,
            skip=args.skip,
            search=target.search if args.search is None else args.search,
            filter=target.filter if args.filter is None else args.filter,
            count=args.count,
        )
        return {
            "target": target.name,
            "count": page.count,
            "pages": 1,
            "items": list(page.items),
        }


def cmd_scripts(args: argparse.Namespace) -> int:
    import asyncio

    if args.all and (args.top is not None or args.skip is not None):
        raise QueryError("--all pages through everything; it cannot be combined with --top/--skip")
    loaded = load(args)
    check_targets([args.target], [t.name for t in loaded.settings.targets])
    result = asyncio.run(_scripts(args, loaded))
    items: list[dict[str, Any]] = result["items"]
    if args.json:
        print_json(result)
    elif sys.stdout.isatty():
        counted = f", @odata.count {result['count']}" if result["count"] is not None else ""
        title = f"{result['target']}: {len(items)} failover scripts{counted}"
        print_items_table(title, items)
    else:
        stream = out()
        for item in items:
            stream.write(str(item.get("Filename", "")) + "\n")
    return EXIT_OK


def add_scripts(commands: Commands) -> None:
    sub = commands.add_parser(
        "scripts",
        help="the live failover-script listing of one PBX",
        description="Query GetFailoverScripts() of one configured PBX. Without --all one "
        "request is made with the given query options; with --all every page is fetched "
        "and the listing is proved complete.",
    )
    sub.add_argument("--target", required=True, metavar="NAME", help="a configured target")
    sub.add_argument("--top", type=non_negative, metavar="N", help="$top (1..100)")
    sub.add_argument("--skip", type=non_negative, metavar="N", help="$skip")
    sub.add_argument("--search", metavar="TEXT", help="$search (quoted for you if needed)")
    sub.add_argument("--filter", metavar="EXPR", help="$filter, checked before sending")
    sub.add_argument("--count", action="store_true", help="ask for @odata.count")
    sub.add_argument("--all", action="store_true", help="page through every script")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_scripts, secrets=PBX_SECRETS)
