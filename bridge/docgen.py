"""Documentation generated from the code: docs/configuration.md and marked blocks of README.md.

The configuration reference comes from the settings models and the metrics list from the
`METRICS` table, so neither is written by hand twice. `python -m bridge.docgen` rewrites every
generated part; `python -m bridge.docgen --check` only reports the stale ones (exit 1), which
is what the docs test runs. A README block sits between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` lines; everything outside the markers stays as people wrote it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["BLOCKS", "README_BLOCKS", "config_sections_markdown", "generated", "replace_block"]

ROOT = Path(__file__).resolve().parents[1]


class MissingMarkers(ValueError):
    """The document has no (or an unclosed) block for a generated part."""


def config_sections_markdown() -> str:
    """One row per top-level key, linking to its part of docs/configuration.md."""
    from bridge.config import Settings

    lines = ["| Section | What it configures |", "|---|---|"]
    for name, field in Settings.model_fields.items():
        is_list = getattr(field.annotation, "__origin__", None) is list
        title = f"{name}[]" if is_list else name
        lines.append(f"| [`{title}`](docs/configuration.md#{name}) | {field.description or ''} |")
    return "\n".join(lines) + "\n"


def _metrics() -> str:
    from bridge.ops.metrics import metrics_markdown

    return metrics_markdown()


# Marker name -> what goes between the markers in README.md.
BLOCKS: dict[str, Callable[[], str]] = {
    "config-reference": config_sections_markdown,
    "metrics": _metrics,
}
README_BLOCKS = tuple(BLOCKS)


def replace_block(text: str, name: str, content: str) -> str:
    """`text` with the block `name` holding `content` (markers kept, exactly one block)."""
    pattern = re.compile(
        rf"(<!-- {re.escape(name)}:start[^>]*-->\n)(.*?)(<!-- {re.escape(name)}:end -->)", re.S
    )
    found = pattern.findall(text)
    if len(found) != 1:
        raise MissingMarkers(
            f"expected one '<!-- {name}:start -->' ... '<!-- {name}:end -->' block, "
            f"found {len(found)}"
        )
    return pattern.sub(lambda m: m.group(1) + content + m.group(3), text)


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's path and the text it should have now."""
    from bridge.commands.config import reference_markdown

    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name, render in BLOCKS.items():
        text = replace_block(text, name, render())
    return {root / "docs" / "configuration.md": reference_markdown(), readme: text}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.docgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report stale files, change none")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "stale" if args.check else "rewritten"
        print(f"{path.relative_to(ROOT)}: {verb}", file=sys.stderr)
    if args.check and stale:
        print("run `python -m bridge.docgen` to regenerate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
