"""Property lists from untrusted senders, bounded before they are expanded (ROBUSTNESS.md F3).

A binary plist is a table of objects that refer to each other by index, so a few hundred bytes can describe a tree
of millions of nodes (each array lists the next one twice). ``plistlib`` shares the objects while reading, but
anything that walks the result (``plistlib.dumps``, JSON, a schema check) expands the tree. So the object table of
a binary plist is checked first, without building anything: every offset and reference in range, no cycle, and
the tree it would expand to within ``Limits`` (depth, nodes, bytes). XML plists cannot share objects (plistlib
refuses entity declarations), so their size is the body's; their depth and node count are checked after parsing.
"""
from __future__ import annotations

import plistlib
from dataclasses import dataclass

BINARY_MAGIC = b"bplist00"
_TRAILER = 32


@dataclass(frozen=True)
class Limits:
    depth: int = 32  # Apple's deepest reports (ProfileList, InstalledApplicationList) nest under 10 levels
    nodes: int = 100_000  # objects in the expanded tree
    size: int = 8 * 1024 * 1024  # bytes of strings and data in the expanded tree


DEFAULT = Limits()


class PlistRefused(ValueError):
    """The bytes are no property list, or one beyond the limits; ``code`` is machine-readable."""

    def __init__(self, message: str, code: str = "not-a-plist"):
        super().__init__(message)
        self.message, self.code = message, code


def loads(data: bytes, limits: Limits = DEFAULT):
    """The value of a binary or XML plist, or PlistRefused saying why not."""
    if data[:8] == BINARY_MAGIC:
        check_binary(data, limits)
    try:
        value = plistlib.loads(data)
    except PlistRefused:
        raise
    except Exception as exc:  # plistlib raises InvalidFileException, ExpatError, ValueError, KeyError, ...
        raise PlistRefused(f"it is not a property list ({type(exc).__name__})") from None
    if data[:8] != BINARY_MAGIC:
        _check_tree(value, limits)
    return value


def load_dict(data: bytes, limits: Limits = DEFAULT) -> dict:
    """A plist whose top object must be a dictionary (every MDM message is one)."""
    value = loads(data, limits)
    if not isinstance(value, dict):
        raise PlistRefused(f"its top object must be a dictionary, not a {type(value).__name__}",
                           code="not-a-dictionary")
    return value


def _check_tree(value, limits: Limits) -> None:
    nodes, size, stack = 0, 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > limits.depth:
            raise PlistRefused(f"the plist nests deeper than {limits.depth} levels", code="plist-too-deep")
        if nodes > limits.nodes:
            raise PlistRefused(f"the plist has more than {limits.nodes} objects", code="plist-too-large")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            size += sum(len(k) for k in item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, (str, bytes)):
            size += len(item)
        if size > limits.size:
            raise PlistRefused(f"the plist holds more than {limits.size} bytes", code="plist-too-large")


def _ints(data: bytes, start: int, width: int, count: int) -> list[int]:
    """``count`` big-endian integers of ``width`` bytes from ``start`` (the caller checked the range)."""
    if width == 1:
        return list(data[start:start + count])
    return [int.from_bytes(data[i:i + width], "big") for i in range(start, start + count * width, width)]


def _int(data: bytes, start: int, width: int) -> int:
    if start < 0 or start + width > len(data):
        raise PlistRefused("a binary plist offset points outside the data", code="bad-binary-plist")
    return int.from_bytes(data[start:start + width], "big")


def _length(data: bytes, offset: int, info: int) -> tuple[int, int]:
    """(count, where the contents start) for an object whose marker's low nibble is ``info``."""
    if info != 0xF:
        return info, offset + 1
    marker = _int(data, offset + 1, 1)
    if marker >> 4 != 0x1:
        raise PlistRefused("a binary plist length is not an integer", code="bad-binary-plist")
    width = 1 << (marker & 0xF)
    return _int(data, offset + 2, width), offset + 2 + width


def _children(data: bytes, offset: int, ref_size: int, count_objects: int, end: int) -> tuple[list[int], int]:
    """The object references of the object at ``offset`` and the bytes it holds itself (strings, data)."""
    marker = _int(data, offset, 1)
    kind, info = marker >> 4, marker & 0xF
    if kind in (0xA, 0xC, 0xD):  # array, set, dictionary (keys then values)
        count, start = _length(data, offset, info)
        count *= 2 if kind == 0xD else 1
        if start + count * ref_size > end:
            raise PlistRefused("a binary plist container runs past the object area", code="bad-binary-plist")
        refs = _ints(data, start, ref_size, count)
        if refs and max(refs) >= count_objects:
            raise PlistRefused("a binary plist reference points past the object table", code="bad-binary-plist")
        return refs, 0
    if kind in (0x4, 0x5, 0x6):  # data, ASCII string, UTF-16 string
        count, start = _length(data, offset, info)
        held = count * (2 if kind == 0x6 else 1)
        if start + held > end:
            raise PlistRefused("a binary plist string or data runs past the object area", code="bad-binary-plist")
        return [], held
    return [], 0


def check_binary(data: bytes, limits: Limits = DEFAULT) -> None:
    """Refuse a binary plist whose object table is broken, cyclic, or expands beyond ``limits``."""
    if len(data) < len(BINARY_MAGIC) + _TRAILER:
        raise PlistRefused("the binary plist is shorter than its header and trailer", code="bad-binary-plist")
    trailer = data[-_TRAILER:]
    offset_size, ref_size = trailer[6], trailer[7]
    count = int.from_bytes(trailer[8:16], "big")
    top = int.from_bytes(trailer[16:24], "big")
    table = int.from_bytes(trailer[24:32], "big")
    if not (1 <= offset_size <= 8 and 1 <= ref_size <= 8) or top >= count:
        raise PlistRefused("the binary plist's trailer is inconsistent", code="bad-binary-plist")
    if count > limits.nodes or table + count * offset_size > len(data) - _TRAILER:
        raise PlistRefused(f"the binary plist declares {count} objects (limit {limits.nodes}) or an offset table "
                           "outside the data", code="plist-too-large")
    offsets = _ints(data, table, offset_size, count)
    # Per object: the nodes, bytes and depth of the tree it expands to, computed once (a DAG costs its edges).
    nodes: list[int] = [0] * count  # 0: not computed yet (a computed object counts at least itself)
    size: list[int] = [0] * count
    depth: list[int] = [0] * count
    on_path = [False] * count
    stack: list[tuple[int, list[int] | None]] = [(top, None)]
    while stack:
        ref, refs = stack.pop()
        if refs is None:  # first visit: expand the children, come back after them
            if nodes[ref]:
                continue
            if on_path[ref]:
                raise PlistRefused("the binary plist refers to itself (a cycle)", code="bad-binary-plist")
            if not 8 <= offsets[ref] < table:
                raise PlistRefused("a binary plist object lies outside the object area", code="bad-binary-plist")
            refs, held = _children(data, offsets[ref], ref_size, count, table)
            on_path[ref], size[ref] = True, held
            stack.append((ref, refs))
            for child in refs:
                if on_path[child] and not nodes[child]:
                    raise PlistRefused("the binary plist refers to itself (a cycle)", code="bad-binary-plist")
                stack.append((child, None))
            continue
        on_path[ref] = False
        nodes[ref] = total = 1 + sum(nodes[c] for c in refs)
        size[ref] += sum(size[c] for c in refs)
        depth[ref] = 1 + max((depth[c] for c in refs), default=0)
        if depth[ref] > limits.depth:
            raise PlistRefused(f"the plist nests deeper than {limits.depth} levels", code="plist-too-deep")
        if total > limits.nodes:
            raise PlistRefused(f"the plist expands to more than {limits.nodes} objects ({len(data)} bytes that "
                               "refer to the same objects again and again)", code="plist-too-large")
        if size[ref] > limits.size:
            raise PlistRefused(f"the plist expands to more than {limits.size} bytes", code="plist-too-large")
