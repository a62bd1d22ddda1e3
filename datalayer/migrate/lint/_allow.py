"""``# datalayer: allow RULE[, RULE] -- reason`` comments in a migration file."""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Collection
from dataclasses import dataclass, field

from ._types import ERROR, Finding

__all__ = ["Allowances", "read_allowances"]

_ALLOW_RE = re.compile(r"^#\s*datalayer\s*:\s*allow\b\s*(?P<body>.*)$", re.I)
# Somewhere in any source with an allow comment: only such a source is tokenized
# (tokenizing every file of a long history cost more than linting its SQL).
_MAYBE_RE = re.compile(r"#\s*datalayer\s*:\s*allow\b", re.I)
INVALID = "invalid-allow-comment"


@dataclass
class Allowances:
    """The rules a file allows (with the reason given) and its malformed allow comments."""

    reasons: dict[str, str] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)


def _comments(source: str) -> list[tuple[int, str]]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []  # the file does not load either; the loader says why
    return [(t.start[0], t.string) for t in tokens if t.type == tokenize.COMMENT]


def read_allowances(source: str, path: str, known: Collection[str]) -> Allowances:
    """Return what the allow comments of a migration file's ``source`` allow."""
    out = Allowances()
    if _MAYBE_RE.search(source) is None:  # no comment can match _ALLOW_RE
        return out
    usage = "write it as `# datalayer: allow RULE[, RULE] -- reason`"
    for line, text in _comments(source):
        match = _ALLOW_RE.match(text.strip())
        if match is None:
            continue
        body = match.group("body")
        rules_part, sep, reason = body.partition("--")
        reason = reason.strip()
        names = [n.strip() for n in rules_part.split(",") if n.strip()]
        where = f"{path}:{line}"
        if not names:
            out.problems.append(Finding(
                INVALID, ERROR, f"{where}: the allow comment names no rule", usage))
            continue
        if not sep or not reason:
            out.problems.append(Finding(
                INVALID, ERROR,
                f"{where}: allowing {', '.join(names)} needs a reason after ` -- `",
                f"{usage}, e.g. `# datalayer: allow {names[0]} -- the table has 10 rows`",
            ))
            continue
        unknown = [n for n in names if n not in known]
        if unknown:
            out.problems.append(Finding(
                INVALID, ERROR,
                f"{where}: unknown rule {', '.join(unknown)} in the allow comment",
                "use a rule name as `datalayer migrate lint` prints it: "
                + ", ".join(sorted(known)),
            ))
            continue
        for name in names:
            out.reasons[name] = reason
    return out
