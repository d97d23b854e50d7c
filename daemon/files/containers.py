"""The zip and XML inside office documents, opened so that a hostile file cannot blow up.

Runs in the document worker only. Three attacks, three bounds:
- a zip bomb (a 40 KB .docx whose document.xml inflates to gigabytes): the central directory's sizes
  are checked before anything is inflated, and zipfile never inflates a member past its declared size;
- entity expansion ("billion laughs") and external entities: a part that declares a DTD with an
  internal subset is refused before any library parses it (office parts never carry one), and our own
  parses keep entities unresolved, never touch the network and never load a DTD;
- deep nesting: libxml2 without `huge_tree` stops at depth 256; the worker's memory limit backs it up.
"""

from __future__ import annotations

import re
import zipfile
from typing import IO, Any

from lxml import etree

#: Members in one document, each member inflated, and all members inflated together.
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
#: How far into a part its prolog (XML declaration, comments, DOCTYPE) may reach before the root element.
MAX_PROLOG = 64 * 1024
XML_SUFFIXES = (".xml", ".rels", ".opf", ".ncx", ".xhtml", ".htm", ".html", ".svg")

#: Whitespace, processing instructions (the XML declaration) and comments: what may stand before a DOCTYPE.
_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->", re.S)
#: A DOCTYPE up to its internal subset's `[`, if it has one (quoted ids may hold `>` or `[`).
_DOCTYPE = re.compile(r"""<!DOCTYPE(?:[^\[>"']|"[^"]*"|'[^']*')*(\[)?""", re.I)
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"<\x00\x00\x00", "utf-32-le"),
         (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be"))


class Refused(ValueError):
    """A document refused for what it would do to the worker, not for being damaged."""


def open_zip(source: IO[bytes]) -> zipfile.ZipFile:
    """The archive, once its directory promises bounded work and its XML parts declare no entities."""
    archive = zipfile.ZipFile(source)
    try:
        check_directory(archive)
        for info in archive.infolist():
            if info.filename.lower().endswith(XML_SUFFIXES):
                with archive.open(info) as member:
                    check_prolog(member.read(MAX_PROLOG), info.filename, complete=info.file_size <= MAX_PROLOG)
    except BaseException:
        archive.close()
        raise
    return archive


def check_directory(archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise Refused(f"the document holds {len(members):,} files; at most {MAX_MEMBERS:,} are read")
    total = 0
    for info in members:
        if info.file_size > MAX_MEMBER_BYTES:
            raise Refused(f"{info.filename} would inflate to {info.file_size:,} bytes "
                          f"(at most {MAX_MEMBER_BYTES // 2**20} MiB a part)")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise Refused(f"the document would inflate to {total:,} bytes (at most {MAX_TOTAL_BYTES // 2**30} GiB)")


def check_prolog(head: bytes, name: str, *, complete: bool) -> None:
    """Refuse a part whose DOCTYPE has an internal subset (entity declarations), or whose prolog is
    too long to be judged. A bare `<!DOCTYPE html>` (EPUB chapters) is harmless: no DTD is loaded."""
    text = _decode_head(head)
    position = 0
    while (item := _PROLOG_ITEM.match(text, position)) is not None:
        position = item.end()
    rest = text[position:]
    doctype = _DOCTYPE.match(rest)
    if doctype is not None and doctype.group(1):
        raise Refused(f"{name} declares XML entities (a DTD internal subset); they are not expanded")
    if doctype is None and not complete and not re.match(r"<[^!?]", rest):
        raise Refused(f"{name}: the XML prolog is longer than {MAX_PROLOG // 1024} KiB")


def _decode_head(head: bytes) -> str:
    encoding = next((codec for bom, codec in _BOMS if head.startswith(bom)), "latin-1")
    # A head cut inside a multi-byte character or a BOM-less UTF-16 still shows its markup.
    return head.decode(encoding, "replace").lstrip("\ufeff")


#: Our own parses: no entity resolution, no DTD, no network, libxml2's default depth and size limits.
XML_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
                             remove_comments=True, remove_pis=True)
HTML_PARSER = etree.HTMLParser(no_network=True, huge_tree=False, remove_comments=True, remove_pis=True)


def parse_member(archive: zipfile.ZipFile, name: str, *, html: bool = False) -> Any:
    """The root element of a member (KeyError when it is missing); its prolog was checked on open."""
    data = archive.read(name)
    if html:
        return etree.fromstring(data, HTML_PARSER)
    return etree.fromstring(data, XML_PARSER)
