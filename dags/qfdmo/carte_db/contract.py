"""The contract checker: a live carte database's catalog against webapp_schema.yml.

The webapp's Django migrations create the carte tables in preprod/prod, this package's SQL
migrations create them locally and in tests; webapp_schema.yml says what both must produce.
`compare()` lists every difference, one line each, naming the table (and column), in the form
`<database> != <contract>`. Values are normalised the way PostgreSQL prints them (type aliases,
casts, parentheses) so that only real differences remain. Only the contract's tables are read:
the platform's other tables and schemas are none of the webapp's business.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

CONTRACT_PATH = Path(__file__).parent / "webapp_schema.yml"

# Short type names -> what format_type() prints.
_TYPE_ALIASES = {"varchar": "character varying", "timestamptz": "timestamp with time zone", "bool": "boolean"}
_TYPE_ALIASES |= {"int": "integer", "int4": "integer", "int8": "bigint", "float8": "double precision"}
# Casts PostgreSQL adds when it prints an expression: multi-word type names first, then one identifier.
_CAST = re.compile(
    r"::\s*(?:character varying|(?:timestamp|time) with(?:out)? time zone|double precision|bit varying"
    r'|"[^"]+"|[a-z_][\w.]*)(?:\s*\(\s*\d+(?:\s*,\s*\d+)?\s*\))?(?:\[\])*',
    re.IGNORECASE,
)
_LITERAL = re.compile(r"('(?:[^']|'')*')")
# pg_get_indexdef() output, or the contract's shorter "[unique] method (columns) [where predicate]".
_INDEX = re.compile(
    r"(?:CREATE (UNIQUE )?INDEX .+? ON (?:ONLY )?\S+ USING |(unique\s+)?)(\w+)\s*(\(.*)", re.IGNORECASE | re.DOTALL
)
# pg_constraint.confdeltype -> the ON DELETE clause.
_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class ColumnSpec:
    type: str
    nullable: bool = False
    default: str | None = None
    identity: bool = False
    references: str | None = None
    choices: tuple[str, ...] = ()  # Django-side only: not compared with the catalog


@dataclass(frozen=True)
class UniqueSpec:
    columns: tuple[str, ...]
    name: str | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: dict[str, ColumnSpec]
    primary_key: tuple[str, ...] = ()
    unique: tuple[UniqueSpec, ...] = ()
    checks: dict[str, str] = field(default_factory=dict)
    indexes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ColumnInfo:
    type: str  # format_type(atttypid, atttypmod)
    not_null: bool
    default: str | None = None  # pg_get_expr(adbin, adrelid)
    identity: str = ""  # attidentity: '' none, 'd' by default, 'a' always


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    table: str
    ref_columns: tuple[str, ...]
    deferrable: bool = True
    deferred: bool = True
    on_delete: str = "a"  # confdeltype


@dataclass
class TableCatalog:
    columns: dict[str, ColumnInfo] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    unique: dict[str, tuple[str, ...]] = field(default_factory=dict)  # constraint name -> columns
    checks: dict[str, str] = field(default_factory=dict)  # name -> pg_get_constraintdef()
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    indexes: dict[str, str] = field(default_factory=dict)  # name -> pg_get_indexdef(), constraints' excluded


def normalize_type(sql_type: str) -> str:
    """The contract's short type names as format_type() prints them (`varchar(9)` -> `character varying(9)`)."""
    match = re.fullmatch(r"\s*([a-z_][a-z0-9_ ]*?)\s*(\([^)]*\))?\s*((?:\[\])*)\s*", sql_type, re.IGNORECASE)
    if not match:
        return sql_type.strip()
    base = " ".join(match[1].lower().split())
    return _TYPE_ALIASES.get(base, base) + re.sub(r"\s+", "", match[2] or "") + match[3]


def _outside_literals(text: str, transform: Callable[[str], str]) -> str:
    """Applies `transform` between string literals, so that 'ACTIF' or '^[0-9a-z_]+$' stay as they are."""
    parts = _LITERAL.split(text)
    return "".join(part if i % 2 else transform(part) for i, part in enumerate(parts)).strip()


def normalize_default(expr: str | None) -> str | None:
    """A default without its casts: `'ACTIF'::character varying` -> `'ACTIF'`; `now()` stays."""
    return None if expr is None else _outside_literals(expr, lambda s: re.sub(r"\s+", " ", _CAST.sub("", s).lower()))


def _expression_part(text: str) -> str:
    text = re.sub(r"[()]", " ", _CAST.sub("", text).replace('"', "").lower())
    text = re.sub(r"\s*,\s*", ", ", re.sub(r"\s+", " ", text))
    return re.sub(r"\[\s+", "[", re.sub(r"\s+\]", "]", text))


def normalize_expr(expr: str) -> str:
    """An expression as a comparison key: casts stripped, parentheses dropped, whitespace collapsed, lowercase.

    `CHECK (((code)::text ~ '^[0-9a-z_]+$'::text))` (pg_get_constraintdef) and `code ~ '^[0-9a-z_]+$'`
    give the same key. Dropping parentheses merges expressions that differ only in grouping; none of
    the contract's do.
    """
    expr = re.sub(r"^\s*CHECK\b|\bNOT VALID\s*$", "", expr, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", _outside_literals(expr, _expression_part))


def _parenthesised(text: str) -> tuple[list[str], str]:
    """The top-level comma-separated items of the group opening text, and what follows the group."""
    items: list[str] = []
    depth, in_literal, start = 0, False, 1
    for i, char in enumerate(text):
        if char == "'":
            in_literal = not in_literal
        elif in_literal:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return [*items, text[start:i]], text[i + 1 :]
        elif char == "," and depth == 1:
            items.append(text[start:i])
            start = i + 1
    raise ValueError(f"unbalanced parentheses: {text!r}")


def canonical_index(definition: str) -> str:
    """`[unique ]method (columns) [where predicate]`, from pg_get_indexdef() or from a contract entry."""
    match = _INDEX.fullmatch(definition.strip())
    if not match:
        raise ValueError(f"index must read '[unique] method (columns) [where predicate]': {definition!r}")
    columns, tail = _parenthesised(match[4])
    where = re.search(r"\bwhere\b", tail, re.IGNORECASE)
    middle = normalize_expr(tail[: where.start()] if where else tail)  # INCLUDE, NULLS NOT DISTINCT, WITH
    canonical = f"{'unique ' if match[1] or match[2] else ''}{match[3].lower()} ("
    canonical += ", ".join(normalize_expr(column) for column in columns) + ")" + (f" {middle}" if middle else "")
    return canonical + (f" where {normalize_expr(tail[where.end() :])}" if where else "")


_TABLE_KEYS = {"primary_key": list, "columns": dict, "unique": list, "checks": dict, "indexes": list}
_UNIQUE_KEYS = {"name": str, "columns": list}
_COLUMN_KEYS = {"type": str, "nullable": bool, "default": str, "identity": bool, "references": str, "choices": list}


def _mapping(where: str, raw: Any, allowed: Mapping[str, type]) -> dict[str, Any]:
    """`raw` checked against the allowed keys and their value types: a misspelt key would check nothing."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    for key, value in raw.items():
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r}")
        if not isinstance(value, allowed[key]):
            raise ValueError(f"{where}: {key} must be a {allowed[key].__name__}, got {value!r}")
    return raw


def _column_list(where: str, value: Any, columns: dict[str, ColumnSpec]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a list of column names, got {value!r}")
    if unknown := [name for name in value if name not in columns]:
        raise ValueError(f"{where}: unknown column(s) {', '.join(map(str, unknown))}")
    return tuple(value)


def _column(where: str, raw: Any) -> ColumnSpec:
    raw = _mapping(where, raw, _COLUMN_KEYS)
    if "type" not in raw:
        raise ValueError(f"{where}: type is required")
    if raw.get("identity") and "default" in raw:
        raise ValueError(f"{where}: an identity column has no default")
    return ColumnSpec(**{**raw, "choices": tuple(raw.get("choices", ()))})


def _table(table: str, raw: Any) -> TableSpec:
    raw = _mapping(table, raw, _TABLE_KEYS)
    if not raw.get("columns"):
        raise ValueError(f"{table}: columns is required")
    columns = {str(name): _column(f"{table}.{name}", spec) for name, spec in raw["columns"].items()}
    unique = []
    for entry in raw.get("unique", []):
        entry = _mapping(f"{table}: unique", entry, _UNIQUE_KEYS) if isinstance(entry, dict) else {"columns": entry}
        unique.append(UniqueSpec(_column_list(f"{table}: unique", entry.get("columns"), columns), entry.get("name")))
    checks = raw.get("checks", {})
    if not all(isinstance(expr, str) for expr in checks.values()):
        raise ValueError(f"{table}: checks must map a constraint name to an expression, got {checks!r}")
    for index in raw.get("indexes", []):
        try:
            canonical_index(index if isinstance(index, str) else "")
        except ValueError as error:
            raise ValueError(f"{table}: {error}") from None
    primary_key = _column_list(f"{table}: primary_key", raw["primary_key"], columns) if "primary_key" in raw else ()
    return TableSpec(table, columns, primary_key, tuple(unique), dict(checks), tuple(raw.get("indexes", ())))


def parse_contract(raw: Any) -> dict[str, TableSpec]:
    """Validated TableSpecs from the decoded YAML (see the format in webapp_schema.yml's header)."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError("contract: expected a mapping of table name -> table")
    return {str(table): _table(str(table), body) for table, body in raw.items()}


def load_contract(path: Path | str = CONTRACT_PATH) -> dict[str, TableSpec]:
    """The contract file's tables by name; raises ValueError on a shape the checker would misread."""
    return parse_contract(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


_RELATIONS_SQL = """
SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum"""
_CONSTRAINTS_SQL = """
SELECT k.conrelid, k.conname, k.contype::text,
       ARRAY(SELECT attname::text FROM pg_attribute WHERE attrelid = k.conrelid AND attnum = ANY(k.conkey)
             ORDER BY array_position(k.conkey, attnum)),
       r.relname::text,
       ARRAY(SELECT attname::text FROM pg_attribute WHERE attrelid = k.confrelid AND attnum = ANY(k.confkey)
             ORDER BY array_position(k.confkey, attnum)),
       k.condeferrable, k.condeferred, k.confdeltype::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k LEFT JOIN pg_class r ON r.oid = k.confrelid
WHERE k.conrelid = ANY(%s::oid[]) AND k.contype IN ('p', 'u', 'c', 'f') ORDER BY k.conrelid, k.conname"""
# A foreign key's conindid is the referenced table's index: only the table's own constraints count.
_INDEXES_SQL = """
SELECT x.indrelid, i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = ANY(%s::oid[]) AND NOT EXISTS (
    SELECT 1 FROM pg_constraint k
    WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u', 'x'))
ORDER BY x.indrelid, i.relname"""


def read_catalog(conn: psycopg.Connection, tables: Iterable[str], schema: str = "public") -> dict[str, TableCatalog]:
    """What pg_catalog says of the given tables of `schema`; the tables that do not exist are absent."""
    names: dict[int, str] = dict(conn.execute(_RELATIONS_SQL, (schema, sorted(tables))).fetchall())
    catalog = {name: TableCatalog() for name in names.values()}
    oids = (list(names),)
    for oid, column, sql_type, not_null, default, identity in conn.execute(_COLUMNS_SQL, oids):
        catalog[names[oid]].columns[column] = ColumnInfo(sql_type, not_null, default, identity)
    for oid, name, kind, columns, ref_table, ref_columns, *flags, definition in conn.execute(_CONSTRAINTS_SQL, oids):
        table = catalog[names[oid]]
        if kind == "p":
            table.primary_key = tuple(columns)
        elif kind == "u":
            table.unique[name] = tuple(columns)
        elif kind == "c":
            table.checks[name] = definition
        else:
            table.foreign_keys.append(ForeignKey(name, tuple(columns), ref_table, tuple(ref_columns), *flags))
    for oid, name, definition in conn.execute(_INDEXES_SQL, oids):
        catalog[names[oid]].indexes[name] = definition
    return catalog


def _compare_column(where: str, spec: ColumnSpec, actual: ColumnInfo) -> list[str]:
    diffs = []
    if normalize_type(actual.type).lower() != normalize_type(spec.type).lower():
        diffs.append(f"{where}: type {actual.type} != {normalize_type(spec.type)}")
    if actual.not_null == spec.nullable:
        nullability = {True: "nullable", False: "not null"}
        diffs.append(f"{where}: {nullability[not actual.not_null]} != {nullability[spec.nullable]}")
    identity = {"d": "identity", "a": "identity always"}.get(actual.identity, "no identity")
    actual_default, spec_default = normalize_default(actual.default), normalize_default(spec.default)
    if spec.identity and identity != "identity":
        if (actual_default or "").startswith("nextval("):  # a serial: its default is that same difference
            identity, actual_default = f"serial {actual_default}", None
        diffs.append(f"{where}: {identity} != identity")
    elif not spec.identity and identity != "no identity":
        diffs.append(f"{where}: {identity} != no identity")
    if actual_default != spec_default:
        diffs.append(f"{where}: default {actual_default or 'none'} != {spec_default or 'none'}")
    return diffs


def _compare_foreign_keys(contract: dict[str, TableSpec], spec: TableSpec, actual: TableCatalog) -> list[str]:
    """Django's foreign keys: one column each, to the primary key, DEFERRABLE INITIALLY DEFERRED, no ON DELETE."""
    diffs = []
    expected: dict[tuple[str, ...], str] = {
        (name,): column.references for name, column in spec.columns.items() if column.references
    }
    for fk in actual.foreign_keys:
        where = f"{spec.name}.{', '.join(fk.columns)}:"
        target = expected.pop(fk.columns, None)
        if target is None:
            diffs.append(f"{where} extra foreign key {fk.name} -> {fk.table}")
            continue
        if fk.table != target:
            diffs.append(f"{where} foreign key -> {fk.table} != {target}")
        elif target in contract and fk.ref_columns != (contract[target].primary_key or fk.ref_columns):
            diffs.append(f"{where} foreign key -> {target} ({', '.join(fk.ref_columns)}), not to its primary key")
        if not (fk.deferrable and fk.deferred):
            flags = "DEFERRABLE INITIALLY IMMEDIATE" if fk.deferrable else "NOT DEFERRABLE"
            diffs.append(f"{where} foreign key -> {fk.table} {flags} != DEFERRABLE INITIALLY DEFERRED")
        if fk.on_delete != "a":
            on_delete = _ON_DELETE.get(fk.on_delete, fk.on_delete)
            diffs.append(f"{where} foreign key -> {fk.table} ON DELETE {on_delete} != NO ACTION")
    for (column,), target in expected.items():
        if column in actual.columns:
            diffs.append(f"{spec.name}.{column}: missing foreign key -> {target}")
    return diffs


def _compare_table(contract: dict[str, TableSpec], spec: TableSpec, actual: TableCatalog) -> list[str]:
    t, diffs = spec.name, []
    for name, column in spec.columns.items():
        if name not in actual.columns:
            diffs.append(f"{t}.{name}: missing column")
        else:
            diffs += _compare_column(f"{t}.{name}", column, actual.columns[name])
    diffs += [f"{t}.{name}: extra column" for name in actual.columns if name not in spec.columns]
    if actual.primary_key != spec.primary_key:
        diffs.append(f"{t}: primary key ({', '.join(actual.primary_key)}) != ({', '.join(spec.primary_key)})")

    unique_names: dict[tuple[str, ...], str | None] = {columns: name for name, columns in actual.unique.items()}
    for unique in spec.unique:
        found = unique_names.pop(unique.columns, None)
        if found is None:
            diffs.append(f"{t}: missing unique ({', '.join(unique.columns)})")
        elif unique.name and found != unique.name:
            diffs.append(f"{t}: unique ({', '.join(unique.columns)}) named {found} != {unique.name}")
    diffs += [f"{t}: extra unique ({', '.join(columns)}) {name}" for columns, name in unique_names.items()]

    for name, expr in spec.checks.items():
        if name not in actual.checks:
            diffs.append(f"{t}: missing check {name}: {expr}")
        elif normalize_expr(actual.checks[name]) != normalize_expr(expr):
            diffs.append(f"{t}: check {name}: {normalize_expr(actual.checks[name])} != {normalize_expr(expr)}")
    extra_checks = {name: expr for name, expr in actual.checks.items() if name not in spec.checks}
    diffs += [f"{t}: extra check {name}: {normalize_expr(expr)}" for name, expr in extra_checks.items()]

    diffs += _compare_foreign_keys(contract, spec, actual)

    expected, extra = Counter(canonical_index(index) for index in spec.indexes), []
    for name, index in ((name, canonical_index(definition)) for name, definition in actual.indexes.items()):
        if expected[index] > 0:
            expected[index] -= 1
        else:
            extra.append(f"{t}: extra index {index} ({name})")
    return diffs + [f"{t}: missing index {index}" for index in expected.elements()] + extra


def compare(contract: dict[str, TableSpec], catalog: dict[str, TableCatalog]) -> list[str]:
    """Every difference, as `<database> != <contract>`; the catalog's tables outside the contract are ignored."""
    diffs = []
    for name, spec in sorted(contract.items()):
        diffs += _compare_table(contract, spec, catalog[name]) if name in catalog else [f"{name}: missing table"]
    return diffs


def check_contract(dsn: str, path: Path | str = CONTRACT_PATH, schema: str = "public") -> list[str]:
    """The differences between the database at `dsn` and the contract file."""
    contract = load_contract(path)
    with psycopg.connect(dsn) as conn:
        return compare(contract, read_catalog(conn, contract, schema))
