"""Every input surface read in one place: files (a search space, a ``--config``), YAML values (``--set``), paths
(path keys, ``--results-dir``, ``--storage``) and the words of an error message.

- A file is read as bytes (at most ``MAX_FILE_BYTES``) and decoded as UTF-8; a folder, an unreadable file or a
  byte that is not UTF-8 is one ``InputError`` naming the file (and line).
- YAML is parsed by ``StrictLoader``: PyYAML's safe loader that refuses a key given twice in one mapping (the
  safe loader keeps the last), nesting deeper than ``MAX_DEPTH``, a document that aliases expand to more than
  ``MAX_NODES`` values, and integers longer than ``MAX_INT_DIGITS`` digits (below Python's 4,300-digit limit
  of ``int(str)``). Non-finite floats (``.nan``, ``.inf``) load as floats; each key's own check refuses them.
- A path is refused when it holds a NUL byte or starts with ``~user`` for a user this machine does not know.
- ``show`` prints a value in an error message: at most ``VALUE_CHARS`` characters, built without walking all of
  a huge value; ``one_line`` is what a CLI prints of an error (its first line, at most ``LINE_CHARS``).

Nothing here imports torch; ``model/config.py`` and ``study/space.py`` turn ``InputError`` into their own errors.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 1 << 20
"""A space or config file larger than this (1 MiB) is refused; the shipped ones are about 2 KB."""
MAX_DEPTH = 32
"""Deepest nesting of YAML collections (a space nests 4 deep)."""
MAX_NODES = 100_000
"""Most values a YAML document may expand to, aliases counted at every use (an alias bomb is refused)."""
MAX_INT_DIGITS = 64
"""Longest YAML integer (digits); the keys' own ranges are far below."""
VALUE_CHARS = 300
"""Most characters of a value shown in an error message."""
LINE_CHARS = 1000
"""Most characters of the one line a CLI prints for an error."""


class InputError(ValueError):
    """Input that cannot be read as given; the message names the file (and line) or the option, and what is
    accepted."""


# ------------------------------------------------------------------------------------------ messages

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = VALUE_CHARS
_REPR.maxother = VALUE_CHARS
_REPR.maxlong = 80
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset"):
    setattr(_REPR, _attr, 12)


def show(value: Any, limit: int = VALUE_CHARS) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters (a long one ends in ``... (N chars)``)."""
    text = _REPR.repr(value) if not isinstance(value, str) else repr(value)
    return _cut(text, limit)


def show_text(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` (not quoted) for a message, at most ``limit`` characters."""
    return _cut(text, limit)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 0x7F, 0x85)} | {0x2028: "\\u2028", 0x2029: "\\u2029"}
"""Characters that would break a message's one line (or hide in it), shown escaped."""


def _cut(text: str, limit: int) -> str:
    text = text.translate(_CONTROL)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 20]}... ({len(text)} chars)"


def one_line(error: BaseException, limit: int = LINE_CHARS) -> str:
    """What a CLI prints of ``error``: its first non-empty line (library errors can run over several), at most
    ``limit`` characters."""
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
    return _cut(first, limit)


# --------------------------------------------------------------------------------------------- files

def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of the file ``path`` (``what`` names it in errors: "search space", "config file")."""
    shown = show_text(str(path))
    if "\0" in str(path):
        raise InputError(f"{what} {show(str(path))} holds a NUL byte; give the path of a file.")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {shown} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"{what} {shown} is a folder; give the path of a YAML file.") from None
    except OSError as e:
        raise InputError(f"{what} {shown} cannot be read ({e.strerror or type(e).__name__}).") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{what} {shown} is larger than {MAX_FILE_BYTES // 1024} KiB; a {what} is a short YAML "
                         f"file.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{shown} line {line}: not UTF-8 (byte 0x{data[e.start]:02x}); save the file as "
                         f"UTF-8.") from None


# ---------------------------------------------------------------------------------------------- YAML

class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, deep nesting, alias bombs and huge integers."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def where(self, mark: Any) -> str:
        return f"{self.source} line {mark.line + 1}" if mark is not None else self.source

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputError(f"{self.where(mark)}: nested more than {MAX_DEPTH} levels deep; a space or "
                                 f"config nests a few levels.")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the safe loader's own error follows
                    continue
                if first is not None:
                    raise InputError(f"{self.where(key_node.start_mark)}: key {show(key)} is given twice (first on "
                                     f"line {first}); give each key once.")
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise InputError(f"{self.where(node.start_mark)}: an integer of {digits} digits; allowed: at most "
                             f"{MAX_INT_DIGITS} digits.")
        return int(super().construct_yaml_int(node))

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        check_size(node, self.source)
        return self.construct_document(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def check_size(node: yaml.Node, source: str) -> None:
    """Refuse a document whose values, aliases expanded, number more than ``MAX_NODES``."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        known = sizes.get(id(n))
        if known is not None:
            return known
        sizes[id(n)] = 1  # a recursive alias counts once
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        total = min(total, MAX_NODES + 1)
        sizes[id(n)] = total
        return total

    if size(node) > MAX_NODES:
        raise InputError(f"{source}: expands to more than {MAX_NODES:,} values (YAML aliases); write the values "
                         f"out.")


def compose(text: str, source: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (one document), checked for depth and size; ``InputError`` on bad YAML."""
    try:
        loader = StrictLoader(text, source)  # its reader refuses characters YAML does not allow (NUL ...)
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            check_size(node, source)
        return node
    except InputError:
        raise
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    except ValueError as e:  # PyYAML's scanner lets chr() fail on an escape past U+10FFFF ("\U01001000")
        raise InputError(f"{source}: not valid YAML ({show_text(str(e), 200)}).") from None
    finally:
        loader.dispose()


def construct(node: yaml.Node | None, source: str) -> Any:
    """The Python value of a node tree ``compose`` returned."""
    if node is None:
        return None
    loader = StrictLoader("", source)  # the text was read by compose; this loader only constructs
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str) -> Any:
    """The value of the YAML ``text`` (``source`` names it in errors: a file, ``--set key=value``)."""
    return construct(compose(text, source), source)


def _yaml_error(e: yaml.YAMLError, source: str) -> InputError:
    mark = getattr(e, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark is not None else ""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow, by its offset in the text
        return InputError(f"{source}: character {e.character!r} at offset {e.position} is not allowed in YAML "
                          f"({e.reason}).")
    problem = getattr(e, "problem", None) or str(e)
    return InputError(f"{source}{line}: not valid YAML ({show_text(' '.join(str(problem).split()), 200)}).")


# --------------------------------------------------------------------------------------------- paths

def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path here (a NUL byte, an unknown ``~user``), or None."""
    if "\0" in value:
        return "holds a NUL byte"
    try:
        Path(value).expanduser()
    except RuntimeError:
        return f"starts with {show_text(value.split('/', 1)[0], 60)}, not a user on this machine"
    return None


def user_path(value: str, what: str) -> Path:
    """``value`` as a path, ``~`` expanded; ``InputError`` naming ``what`` (a key, an option) for a NUL byte or
    a ``~user`` this machine does not know."""
    problem = path_problem(value)
    if problem is not None:
        raise InputError(f"{what} is {show(value)}, which {problem}; allowed: an absolute or relative path, or "
                         f"~/... for the home folder.")
    return Path(value).expanduser()
