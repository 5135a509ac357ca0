"""A config's YAML text → a plain document, refusing what a config never needs.

PyYAML's ``SafeLoader`` with three more rules: a key given twice in one
mapping is an error (not "last one wins"); a document whose aliases would
expand past :data:`MAX_CONFIG_NODES` values, or that nests deeper than
:data:`MAX_CONFIG_DEPTH`, or that refers to itself, is refused before
anything expands it (a 13-line "billion laughs" file would expand to 10**9
values in the memo and in validation). Errors are ``ConfigError`` with the
line and, where it helps, the line's text as the hint.

PyYAML is imported on first use only: a remembered document
(:mod:`skyctl.config.memo`) never imports it.
"""

from __future__ import annotations

import functools
from typing import Any

from skyctl.errors import ConfigError

__all__ = ["LIMITS_HINT", "MAX_CONFIG_DEPTH", "MAX_CONFIG_NODES", "load_yaml"]

#: the most YAML nodes (scalars, lists, mappings; keys included) a config may hold, each alias counted
#: every time it is used: PyYAML shares an aliased node, but anything that walks the document (the JSON
#: memo, validation) expands it, so a 13-line "billion laughs" file would expand to 10**9 values
MAX_CONFIG_NODES = 100_000
#: the deepest nesting of lists and mappings a config may have (aliases followed); an alias to an
#: enclosing node (a recursive document) is refused as well
MAX_CONFIG_DEPTH = 64

LIMITS_HINT = ("a config needs few aliases and little nesting: skyctl refuses YAML that aliases (*name) blow up "
                "or that nests without end (see docs/security.md)")


@functools.lru_cache(maxsize=1)
def _limit_error() -> type[Exception]:
    """The error of a document over the limits, made on first use (it subclasses PyYAML's, for the line)."""
    import yaml

    class LimitError(yaml.MarkedYAMLError):
        """The document is over :data:`MAX_CONFIG_NODES` or :data:`MAX_CONFIG_DEPTH`, or refers to itself."""

    return LimitError


def _check_expansion(root: Any) -> None:
    """Refuse a composed YAML document that aliases would expand past the limits, before anything expands it.

    Walks the node graph once (each shared node once, iteratively, so no
    recursion): the size of a node is 1 + its children's sizes, counting an
    aliased node every time it is used; its height is 1 + its tallest child's.
    A node that is its own ancestor (``&a [*a]``) is refused too.
    """
    import yaml

    error = _limit_error()
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
    ancestors: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.MappingNode):
            return [item for pair in node.value for item in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            ancestors.discard(key)
            size, height = 1, 1
            for child in children(node):
                child_size, child_height = sizes[id(child)]
                size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_CONFIG_NODES:
                kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
                raise error(None, None, f"this {kind} holds more than {MAX_CONFIG_NODES} values once its aliases "
                            "are expanded (each alias counts every time it is used)", node.start_mark)
            if height > MAX_CONFIG_DEPTH:
                raise error(None, None, f"lists and mappings are nested more than {MAX_CONFIG_DEPTH} levels deep",
                            node.start_mark)
            sizes[key] = (size, height)
            continue
        if key in sizes:
            continue
        if key in ancestors:
            raise error(None, None, "an alias refers to a node that contains it (a recursive document)", node.start_mark)
        ancestors.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children(node) if id(child) not in sizes)


@functools.lru_cache(maxsize=1)
def _unique_key_loader() -> Any:
    """A SafeLoader that refuses a key given twice in one mapping (merge keys excepted) and
    a document over the limits (``_check_expansion``, before anything is constructed);
    made on first use, so that a remembered document never imports PyYAML."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        #: nodes composed so far, aliases included: each counts at least once in the expanded size,
        #: so a dense file is refused as soon as it passes the limit, not after composing all of it
        composed = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.composed += 1
            if self.composed > MAX_CONFIG_NODES:
                raise _limit_error()(None, None, f"the document holds more than {MAX_CONFIG_NODES} values by here "
                                     "(each alias counts every time it is used)", self.peek_event().start_mark)
            return super().compose_node(parent, index)

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_expansion(node)
            return node

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key; SafeConstructor reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader



def load_yaml(text: str, where: str) -> Any:
    """The document of ``text`` (``where`` names the file in messages); ``ConfigError`` with the line."""
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # PyYAML composes nested nodes recursively: deeper than Python allows
        raise ConfigError(f"{where}: lists and mappings are nested more than {MAX_CONFIG_DEPTH} levels deep",
                          LIMITS_HINT) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark is None:
            raise ConfigError(f"{where}: {problem}") from None
        lines = text.splitlines()
        source = lines[mark.line] if mark.line < len(lines) else ""
        hint = f"line {mark.line + 1}: {source.strip()}" if source.strip() else None
        if "\t" in source:
            hint = "YAML indents with spaces, not tabs"
        if isinstance(exc, _limit_error()):
            hint = LIMITS_HINT
        raise ConfigError(f"{where} line {mark.line + 1}: {problem}", hint) from None
