"""Refresh or check the code-derived regions of docs/protocol.md (message tables, codes, event
arguments, hex examples), which the sans-IO `itpump.protocol.examples` renders.

    python -m itpump.tools.gen_protocol_docs --write   # refresh every generated region
    python -m itpump.tools.gen_protocol_docs --check   # exit status 1 if the document is stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def main(argv: Sequence[str] | None = None) -> int:
    """``--write`` refreshes the document, ``--check`` verifies it (exit 1 when stale)."""
    from itpump.protocol.examples import update_document

    parser = argparse.ArgumentParser(
        prog="python -m itpump.tools.gen_protocol_docs",
        description="Regenerate the code-derived parts of the protocol specification.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="update the document in place")
    group.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    parser.add_argument("--doc", type=Path, default=DOC_PATH, help="path of protocol.md")
    args = parser.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    updated = update_document(text)
    if args.check:
        if updated != text:
            print(
                f"{args.doc} is out of date: run python -m itpump.tools.gen_protocol_docs --write",
                file=sys.stderr,
            )
            return 1
        print(f"{args.doc} is up to date")
        return 0
    if updated != text:
        args.doc.write_text(updated, encoding="utf-8")
        print(f"updated {args.doc}")
    else:
        print(f"{args.doc} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
