"""docs/protocol.md cannot drift: its generated parts are regenerated and compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from itpump.protocol.examples import examples_markdown, update_document
from itpump.protocol.framing import crc16_ccitt_false
from itpump.tools.gen_protocol_docs import DOC_PATH, main


def test_document_matches_the_code() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    assert update_document(text) == text, (
        "docs/protocol.md is out of date: run `python -m itpump.tools.gen_protocol_docs --write`"
    )


def test_examples_are_deterministic() -> None:
    assert examples_markdown() == examples_markdown()


def test_document_states_the_crc_check_value() -> None:
    assert f"0x{crc16_ccitt_false(b'123456789'):04X}" in DOC_PATH.read_text(encoding="utf-8")


def test_write_and_check(tmp_path: Path) -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    begin = "<!-- BEGIN GENERATED: examples -->\n"
    start = text.index(begin) + len(begin)
    end = text.index("<!-- END GENERATED: examples -->")
    doc = tmp_path / "protocol.md"
    doc.write_text(text[:start] + "stale\n" + text[end:], encoding="utf-8")
    assert main(["--check", "--doc", str(doc)]) == 1
    assert main(["--write", "--doc", str(doc)]) == 0
    assert main(["--check", "--doc", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == DOC_PATH.read_text(encoding="utf-8")


def test_missing_region_is_an_error() -> None:
    with pytest.raises(ValueError, match="lacks generated regions"):
        update_document("no markers here\n")


def test_readme_states_the_key_formula_byte_for_byte() -> None:
    import hashlib
    import hmac

    from itpump.protocol.auth import DEFAULT_MASTER_KEY, derive_pump_key, derive_role_key
    from itpump.protocol.messages import Role

    readme = (DOC_PATH.parents[1] / "README.md").read_text(encoding="utf-8")
    formula = 'hmac.new(master.encode("utf-8"), serial.encode("utf-8"),\nhashlib.sha256).digest()'
    assert " ".join(formula.split()) in " ".join(readme.split())
    assert f"`{DEFAULT_MASTER_KEY.decode('ascii')}`" in readme
    master, serial = DEFAULT_MASTER_KEY.decode("utf-8"), "PP20-000001"
    pump_key = hmac.new(master.encode("utf-8"), serial.encode("utf-8"), hashlib.sha256).digest()
    assert pump_key == derive_pump_key(DEFAULT_MASTER_KEY, serial)
    role_formula = 'HMAC-SHA256(K, b"itpump/v1/role-key" + bytes([role]))'
    assert role_formula in " ".join(readme.split())
    for role in Role:
        written = hmac.new(pump_key, b"itpump/v1/role-key" + bytes([role]), hashlib.sha256)
        assert written.digest() == derive_role_key(DEFAULT_MASTER_KEY, serial, role)


def test_protocol_text_names_every_unauthenticated_refusal() -> None:
    text = " ".join(DOC_PATH.read_text(encoding="utf-8").split())
    section = text[text.index("**Unauthenticated refusals**") : text.index("**How a programmer")]
    for name in ("UNSUPPORTED_VERSION", "MALFORMED", "UNKNOWN_MESSAGE", "NOT_AUTHENTICATED"):
        assert name in section
    assert "BAD_MAC" in section
    assert "**REPLAYED**" in section
    assert "PROGRAM_CHUNK_OUT_OF_ORDER" in text
