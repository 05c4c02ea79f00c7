"""The module picture of DESIGN.md is one-directional: a module imports only modules above it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "auditor"
# Top-level in the source tree, shipped as auditor.migrations: outside the layered package.
MIGRATIONS = ROOT / "migrations"


def layers() -> list[str]:
    """The names under ``auditor/`` in the layout block of DESIGN.md, top first."""
    return list(picture())


def picture() -> dict[str, list[str]]:
    """Each name under ``auditor/`` in DESIGN.md's layout block, top first, with the modules
    listed under it (indented once more) when it is a package."""
    text = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    body = block.split("auditor/\n", 1)[1]
    names: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        top = re.match(r"^  (\w+)(\.py|/)\s", line)
        inner = re.match(r"^    (\w+)\.py\s", line)
        if top is not None:
            current = names.setdefault(top.group(1), [])
        elif inner is not None and current is not None:
            current.append(inner.group(1))
        else:
            break
    return names


def imported_layers(path: Path) -> set[str]:
    """Every ``auditor.<layer>`` a file imports, at the top, in a function or for typing."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "auditor":
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "auditor" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_design_lists_every_module() -> None:
    order = layers()
    present = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and not p.name.startswith("__"))
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert present == set(order), "DESIGN.md's layout and auditor/ disagree"


def test_imports_point_upwards_only() -> None:
    order = layers()
    rank = {name: index for index, name in enumerate(order)}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        if own not in rank:  # __init__.py and __main__.py of the package itself
            continue
        for name in imported_layers(path) - {"__version__"}:
            if name not in rank:
                wrong.append(f"{relative} imports auditor.{name}, which DESIGN.md does not list")
            elif rank[name] > rank[own]:
                wrong.append(f"{relative} ({own}) imports auditor.{name}, which is below it")
    assert not wrong, "\n".join(wrong)


def test_migrations_import_only_the_store_and_what_is_above_it() -> None:
    """The migrations run inside ``auditor.store`` (its ``upgrade``): ``env.py`` may use the
    store's engine set-up and tables and what is above the store, and a revision uses nothing of
    ``auditor`` at all, so that it keeps describing the tables as they were when it was written.
    Nothing under ``auditor/`` imports them: the store hands their folder to Alembic."""
    order = layers()
    allowed = set(order[: order.index("store") + 1])
    wrong = []
    for path in sorted(MIGRATIONS.rglob("*.py")):
        relative = path.relative_to(ROOT)
        imported = imported_layers(path) - {"__version__"}
        if path.parent.name == "versions" and imported:
            wrong.append(f"{relative} imports auditor.{', auditor.'.join(sorted(imported))}")
        elif imported - allowed:
            below = ", ".join(f"auditor.{name}" for name in sorted(imported - allowed))
            wrong.append(f"{relative} imports {below}, which is below the store")
    assert not wrong, "\n".join(wrong)
    assert (MIGRATIONS / "env.py").exists()
    assert not (PACKAGE / "migrations").exists(), "the migrations live in the top-level migrations/"


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module of ``auditor.<package>`` a file imports (``from auditor.store.schema import
    x``, ``from auditor.cli import record``, ``import auditor.web.api``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[:2] != ["auditor", package]:
                continue
            if len(parts) > 2:
                found.add(parts[2])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[:2] == ["auditor", package] and len(parts) > 2:
                    found.add(parts[2])
    return found


def test_design_lists_every_module_of_each_package() -> None:
    wrong = []
    for package, modules in picture().items():
        folder = PACKAGE / package
        if not folder.is_dir():
            assert not modules, f"{package} is a module, yet DESIGN.md lists modules under it"
            continue
        present = {p.stem for p in folder.glob("*.py") if not p.name.startswith("__")}
        present |= {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
        if set(modules) != present:
            wrong.append(
                f"auditor/{package}/: DESIGN.md lists {sorted(set(modules) - present)} that do not"
                f" exist and misses {sorted(present - set(modules))}"
            )
    assert not wrong, "\n".join(wrong)


def test_imports_inside_each_package_point_upwards_only() -> None:
    """Inside a package too, a module imports only the modules listed above it; the package's
    ``__init__.py`` may re-export any of them."""
    wrong = []
    for package, modules in picture().items():
        rank = {name: index for index, name in enumerate(modules)}
        for name in modules:
            path = PACKAGE / package / f"{name}.py"
            for imported in sorted(imported_modules(path, package) & set(rank)):
                if rank[imported] >= rank[name]:
                    wrong.append(
                        f"auditor/{package}/{name}.py imports auditor.{package}.{imported},"
                        " which DESIGN.md lists below it"
                    )
    assert not wrong, "\n".join(wrong)
