"""Loading a study file: YAML in, a validated `Study` out, or errors that say where and what.

A study is YAML (read with ``yaml.safe_load`` semantics only) validated by the pydantic models
of `rksearch.search.schema`, which forbid unknown keys.  Every problem becomes one line of a
`StudyError`::

    studies/sweep.yaml:12: search.algorithm: 'optuna' is not allowed; allowed: grid, random, tpe, multi_objective

Nothing runs and nothing is written anywhere until `load` returns, so a bad file costs nothing.
``--set key.path=value`` overrides are applied to the parsed document before validation and
are reported as ``--set key.path`` when they are the culprit.

A hostile or mistaken file is refused the same way, in one line and in bounded time and memory:
one that is not UTF-8 text (a binary passed by mistake), one that is empty, and one whose YAML
aliases (``&anchor`` / ``*alias``) expand past `MAX_EXPANDED_VALUES` (the "billion laughs"),
contain themselves, or nest too deep to parse.  The expansion is measured on the parsed node
graph, each node once, before anything (line numbers, validation, the database) walks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from rksearch.errors import RksearchError
from rksearch.search.schema import Study

#: the most values (mapping keys, values, list items) a study may hold once every alias is expanded.
#: Real studies hold a few hundred, so this leaves room for a very long `values:` or `seeds:` list,
#: yet walking, validating and storing an allowed document stays well under a second and ~100 MB;
#: a "billion laughs" file of nine short lines (each a list of ten aliases of the line before)
#: would otherwise expand to 10^9 values and exhaust memory in the line walk and pydantic.
MAX_EXPANDED_VALUES = 100_000


class StudyError(RksearchError, ValueError):
    """A study file (or override) that cannot run; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def load(path: str | Path, overrides: list[str] | None = None) -> tuple[Study, str]:
    """The validated study and the exact text that defines it (file plus overrides, for the database)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError([f"{path}: cannot read the study file ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:  # a binary (an image, a checkpoint) passed by mistake
        raise StudyError([f"{path}: not a text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
                          "is not UTF-8; a study file is YAML text"]) from None
    return loads(text, source=str(path), overrides=overrides)


def loads(text: str, source: str = "<study>", overrides: list[str] | None = None) -> tuple[Study, str]:
    """`load` of a study's text; `source` names it in messages (a file name, or ``<study>``)."""
    document, lines, size = _parse_yaml(text, source)
    overrides = overrides or []
    set_paths = {}
    for item in overrides:
        dotted, value_size = _apply_override(document, item, source)
        set_paths[dotted] = f"--set {dotted}"
        size += value_size
    if size > MAX_EXPANDED_VALUES:  # each part passed alone; the sum bounds the merged document from above
        raise StudyError([f"{source}: with its --set overrides the study holds more than {MAX_EXPANDED_VALUES:,} "
                          "values; a whole study has a few hundred, so it is refused"])
    try:
        study = Study.model_validate(document)
    except ValidationError as exc:
        raise StudyError([_describe(err, source, lines, set_paths) for err in exc.errors()]) from None
    if overrides:
        text = text.rstrip("\n") + "\n# overrides: " + " ".join(f"--set {o}" for o in overrides) + "\n"
    return study, text


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int], int]:
    """The document as plain data, the line of every key path (for messages) and its expanded size."""
    try:
        document, root, size = _safe_load(text, source, with_lines=True)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError([f"{where}: not valid YAML: {problem}"]) from None
    if document is None:  # an empty file, or one of comments only
        raise StudyError([f"{source}: the study file is empty; it is a mapping of fields (name, data, space, ...)"])
    if not isinstance(document, dict):
        raise StudyError([f"{source}:1: a study file is a mapping of fields (name, data, space, ...), "
                          f"not {type(document).__name__}"])
    lines: dict[tuple, int] = {}
    _walk(root, (), lines, set())  # after construction: `<<` merge keys are flattened, keys at their anchor
    return document, lines, size


def _safe_load(text: str, source: str, with_lines: bool) -> tuple[Any, yaml.Node | None, int]:
    """`yaml.safe_load`, refusing (one StudyError line) a document that would be too costly to use.

    Also returns the composed node graph, for line numbers, and the document's expanded size.
    safe_load itself shares aliased objects, so a few bytes can stand for 10^9 values that only
    the code after it pays for; the size is measured here, before anything walks the expansion.
    Messages name `source`, with the line of the culprit when `with_lines` (a file, not a --set).
    """
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            size = _expanded_size(root, source, with_lines) if root is not None else 0
            return (loader.construct_document(root) if root is not None else None), root, size
        finally:
            loader.dispose()
    except RecursionError:  # PyYAML composes and constructs recursively
        raise StudyError([f"{source}: the document nests too deeply to read (lists or mappings hundreds of "
                          "levels deep); a study is a few levels deep, so it is refused"]) from None


def _expanded_size(root: yaml.Node, source: str, with_lines: bool) -> int:
    """How many values (keys, values, list items) `root` holds once every alias is expanded.

    Each node's size is computed once and reused wherever an alias repeats it, so this costs time
    linear in the file however large the expansion.  Refuses the first node, innermost first,
    that holds more than MAX_EXPANDED_VALUES, and a node that contains itself through an alias.
    """
    sizes: dict[int, int | None] = {}  # id(node) -> its expanded size; None while its children are counted

    def where(node: yaml.Node) -> str:
        return f"{source}:{node.start_mark.line + 1}" if with_lines else source

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            known = sizes[id(node)]
            if known is None:
                raise StudyError([f"{where(node)}: this value contains itself through a YAML alias "
                                  "(&anchor / *alias), so it never ends; refusing it"])
            return known
        sizes[id(node)] = None
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        total = 1 + sum(size(child) for child in children)
        if total > MAX_EXPANDED_VALUES:
            raise StudyError([f"{where(node)}: this value holds more than {MAX_EXPANDED_VALUES:,} values once YAML "
                              "aliases (&anchor / *alias) are expanded; a whole study has a few hundred, "
                              "so it is refused"])
        sizes[id(node)] = total
        return total

    return size(root)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], walked: set[int]) -> None:
    """Record the line of `path` and of every key path below it.

    A node met again through an alias is not walked again, which keeps this linear in the file:
    the paths below its second use fall back (in `_describe`) to the line of the alias itself.
    """
    lines[path] = node.start_mark.line + 1
    if id(node) in walked:
        return
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            _walk(value, child, lines, walked)
            lines[child] = key.start_mark.line + 1  # the key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _walk(value, path + (i,), lines, walked)


def _apply_override(document: dict[str, Any], item: str, source: str) -> tuple[str, int]:
    """Set one ``key.path=value`` in `document`; the dotted path, and the value's expanded size."""
    dotted, sep, raw = item.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(keys):
        raise StudyError([f"--set {item}: write key.path=value, e.g. --set train.epochs=2"])
    try:
        value, _, size = _safe_load(raw, f"--set {dotted}", with_lines=False)
    except yaml.YAMLError:  # not YAML: the text itself, e.g. --set description=[draft
        value, size = raw, 1
    target = document
    for key in keys[:-1]:
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            raise StudyError([f"--set {dotted}: {key} is not a section in {source}"])
        target = child
    target[keys[-1]] = value
    return ".".join(keys), size


def _describe(err: dict[str, Any], source: str, lines: dict[tuple, int], set_paths: dict[str, str]) -> str:
    """One line: where (file:line or --set), which field, what is wrong, what is allowed."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[0].isupper()) and not _is_union_tag(p))
    field = ".".join(str(p) for p in loc) or "(top level)"
    where = next((set_paths[k] for k in set_paths if field == k or field.startswith(k + ".")), None)
    if where is None:
        path = loc
        while path and path not in lines:
            path = path[:-1]
        where = f"{source}:{lines.get(path, 1)}"
    return f"{where}: {field}: {_message(err, loc)}"


def _is_union_tag(part: Any) -> bool:
    """pydantic's names for union members and validators in error locations (not fields)."""
    return isinstance(part, str) and part.startswith(
        ("function-", "int", "list[", "str", "bool", "float", "tuple[", "constrained-"))


def _message(err: dict[str, Any], loc: tuple) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err.get('input')!r} is not allowed; allowed: {expected.replace(' or ', ', ')}"
    return msg


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds, also when it is optional (``Mlflow | None``)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = Study
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = _section_model(model.model_fields[part].annotation)
        else:
            if loc and loc[0] == "space":
                return ["values", "per_period", "range", "step", "uniform", "loguniform"]
            return []
    return list(model.model_fields) if model is not None else []
