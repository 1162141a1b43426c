"""The config keys as `python -m ldlm.training.train --help` lists them: section, name, type, default and the
comment beside the field in ldlm/config.py, read from its source so the dataclass stays the one
place they are written (with their provenance tags [S]/[R]/[S-weak])."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import tokenize
import typing

from .config import Config


def field_comments() -> tuple[dict[str, str], dict[str, str]]:
    """({key: its end-of-line comment}, {key: the title of the `# --- title ---` section it is in})."""
    source = inspect.getsource(Config)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    fields = {node.lineno: node.target.id for node in ast.parse(source).body[0].body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    doc, section, title = {}, {}, ""
    for line in sorted({*comments, *fields}):
        if line in fields:
            doc[fields[line]] = comments.get(line, "")
            section[fields[line]] = title
        elif comments[line].startswith("---"):
            title = comments[line].strip("- ")
    return doc, section


def keys_help(cfg: Config, whose: str) -> str:
    """Every config key of `cfg` (whose defaults: `whose`), grouped by section, one line each."""
    doc, section = field_comments()
    types = typing.get_type_hints(Config)
    lines, title = [f"config keys (key=value after the options; defaults: {whose}):"], None
    for f in dataclasses.fields(Config):
        if section[f.name] != title:
            title = section[f.name]
            lines.append(f"\n  {title}")
        value, comment = getattr(cfg, f.name), doc[f.name]
        if value != f.default and f.name != "preset":  # the comment's tags describe the dataclass value
            comment = f"{comment} (dataclass: {json.dumps(f.default)})".lstrip()
        lines.append(f"    {f.name:<23} {types[f.name].__name__:<5} {json.dumps(value):<13} {comment}".rstrip())
    return "\n".join(lines)
