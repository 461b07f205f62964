#!/usr/bin/env python3
"""Compile spec-schemas/*.json into plain Python for pyoci's fast validation path.

Writes two modules (both generated, both committed):
  pyoci/spec/_compiled_validator.py  is_valid_config/state/features(doc) -> bool, no jsonschema
  pyoci/spec/_compiled_schemas.py    SCHEMAS: the schema files as Python literals, for the
                                     jsonschema slow path that explains a failure

Only the JSON Schema draft-04 subset the project's schemas use is supported; any other keyword
stops generation, so a schema edit can never be silently ignored by the fast path. Semantics
follow jsonschema's Draft4Validator: "integer" excludes bool and float, "pattern" and
"patternProperties" use re.search, keyword siblings of "$ref" are ignored.

The generated module does not import `re` (~5 ms with what it pulls in, on every create): the
patterns the schemas use have hand-written equivalents (PATTERN_CHECKS), which generation
compares with re.search on a corpus of strings around each pattern and refuses to emit on any
disagreement; any other pattern is compiled with `re` on its first use.

Usage: gen-validator.py [--check]   (--check: exit 1 if the committed modules are stale)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pprint
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_DIR = os.path.join(REPO, "spec-schemas")
OUT_DIR = os.path.join(REPO, "pyoci", "spec")
VALIDATOR_MODULE = "_compiled_validator.py"
SCHEMAS_MODULE = "_compiled_schemas.py"

# Public entry point name -> root schema file.
ROOTS = {
    "config": "config-schema.json",
    "state": "state-schema.json",
    "features": "features-schema.json",
}

ANNOTATION_KEYWORDS = {"$schema", "description", "title", "definitions", "id"}
OBJECT_KEYWORDS = {"properties", "required", "additionalProperties", "patternProperties"}
ARRAY_KEYWORDS = {"items", "minItems", "maxItems"}
STRING_KEYWORDS = {"pattern", "minLength", "maxLength"}
NUMBER_KEYWORDS = {"minimum", "maximum"}
OTHER_KEYWORDS = {"$ref", "type", "enum", "allOf", "anyOf", "not"}
SUPPORTED = OBJECT_KEYWORDS | ARRAY_KEYWORDS | STRING_KEYWORDS | NUMBER_KEYWORDS | OTHER_KEYWORDS

TYPE_CHECKS = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "integer": "(isinstance({v}, int) and not isinstance({v}, bool))",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
}
NUMBER_GUARD = "(isinstance({v}, (int, float)) and not isinstance({v}, bool))"

# pattern -> (function name, source of a function equal to `re.search(pattern, s) is not
# None` for every str s). Under re's rules: `$` also matches before a final "\n" (none of
# these patterns can match a "\n" otherwise, so the functions drop one first), character
# ranges such as [0-9] and [A-Z] are ASCII only. _verify_pattern_check holds them to it.
_DIGITS = "frozenset('0123456789')"
PATTERN_CHECKS = {
    "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-]"
    "[0-9A-Za-z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?(\\+[0-9A-Za-z-]+"
    "(\\.[0-9A-Za-z-]+)*)?$": ("_semver", f'''\
_SEMVER_DIGITS = {_DIGITS}
_SEMVER_IDENT = frozenset('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-')


def _semver_number(p):
    return p == '0' or (p[:1] in '123456789' and p != '' and _SEMVER_DIGITS.issuperset(p))


def _semver(s):
    """SemVer 2.0.0: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]."""
    if s[-1:] == '\\n': s = s[:-1]
    s, plus, build = s.partition('+')
    s, dash, pre = s.partition('-')
    core = s.split('.')
    if len(core) != 3 or not all(_semver_number(p) for p in core): return False
    if dash:
        for p in pre.split('.'):
            if not (_semver_number(p) or (p != '' and _SEMVER_IDENT.issuperset(p)
                                          and not _SEMVER_DIGITS.issuperset(p))):
                return False
    if plus:
        for p in build.split('.'):
            if p == '' or not _SEMVER_IDENT.issuperset(p): return False
    return True
'''),
    "^MB:[^\\n]*$": ("_mb_schema", '''\
def _mb_schema(s):
    if s[-1:] == '\\n': s = s[:-1]
    return s[:3] == 'MB:' and '\\n' not in s
'''),
    "^CAP_[A-Z_]+$": ("_cap_name", '''\
_CAP_CHARS = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZ_')


def _cap_name(s):
    if s[-1:] == '\\n': s = s[:-1]
    return len(s) > 4 and s[:4] == 'CAP_' and _CAP_CHARS.issuperset(s[4:])
'''),
    "^RLIMIT_[A-Z]+$": ("_rlimit_name", '''\
_RLIMIT_CHARS = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZ')


def _rlimit_name(s):
    if s[-1:] == '\\n': s = s[:-1]
    return len(s) > 7 and s[:7] == 'RLIMIT_' and _RLIMIT_CHARS.issuperset(s[7:])
'''),
    "^[0-9, -]*$": ("_cpu_list", '''\
_CPU_LIST_CHARS = frozenset('0123456789, -')


def _cpu_list(s):
    if s[-1:] == '\\n': s = s[:-1]
    return _CPU_LIST_CHARS.issuperset(s)
'''),
    "^[bcpu]$": ("_device_type", '''\
def _device_type(s):
    if s[-1:] == '\\n': s = s[:-1]
    return s in ('b', 'c', 'p', 'u')
'''),
    "^[1-9][0-9]*[KMG]B$": ("_page_size", f'''\
_PAGE_SIZE_DIGITS = {_DIGITS}


def _page_size(s):
    if s[-1:] == '\\n': s = s[:-1]
    return (len(s) >= 3 and s[0] in '123456789' and s[-2] in 'KMG' and s[-1] == 'B'
            and _PAGE_SIZE_DIGITS.issuperset(s[1:-2]))
'''),
}

# Valid strings for each hand-written pattern: the corpus is built around them.
PATTERN_SEEDS = {
    "_semver": ("1.0.0", "10.20.30-rc.1+b.7", "0.0.0-0a-.x+0-"),
    "_mb_schema": ("MB:0=70;1=70", "MB:"),
    "_cap_name": ("CAP_SYS_ADMIN", "CAP_X"),
    "_rlimit_name": ("RLIMIT_NOFILE", "RLIMIT_X"),
    "_cpu_list": ("0-3, 5", ""),
    "_device_type": ("c", "u"),
    "_page_size": ("2MB", "1024KB"),
}

# Search code for a pattern without a hand-written check: `re` on first use only.
SEARCH_CLASS = '''\
class _Search:
    """re.search(pattern, s) is not None; re is imported on the first call (it is slow to
    import, and most configs never reach a pattern without a hand-written check)."""

    __slots__ = ("pattern", "rx")

    def __init__(self, pattern):
        self.pattern, self.rx = pattern, None

    def __call__(self, s):
        if self.rx is None:
            import re

            self.rx = re.compile(self.pattern)
        return self.rx.search(s) is not None
'''


def _verify_pattern_check(pattern: str, name: str, source: str) -> None:
    """Compare the hand-written check with re.search on every string of up to 3 characters
    from the pattern's own characters and some others, and on every string one or two edits
    away from the pattern's seeds; ValueError on the first disagreement."""
    namespace: dict = {}
    exec(compile(source, f"<check for {pattern}>", "exec"), namespace)  # noqa: S102
    check, rx = namespace[name], re.compile(pattern)
    alphabet = sorted(set(pattern) | set("09aZ_-.+ \n\u00e9\u0663"))
    seeds = PATTERN_SEEDS[name]
    corpus = {""} | set(seeds)
    for n in (1, 2, 3):
        corpus |= {"".join(t) for t in itertools.product(alphabet[:24], repeat=n)}

    def edits(s: str) -> set[str]:
        out = {s[:i] + s[i + 1:] for i in range(len(s))}
        for i in range(len(s) + 1):
            out |= {s[:i] + c + s[i:] for c in alphabet}
            if i < len(s):
                out |= {s[:i] + c + s[i + 1:] for c in alphabet}
        return out

    for seed in seeds:
        once = edits(seed)
        corpus |= once
        if seed == seeds[0]:
            for s in once:
                corpus |= edits(s)
    for s in sorted(corpus):
        if check(s) != (rx.search(s) is not None):
            raise ValueError(f"hand-written check {name} disagrees with pattern {pattern!r} "
                             f"on {s!r}")


def load_schemas(schema_dir: str = SCHEMA_DIR) -> dict[str, dict]:
    """Every *.json file of schema_dir, keyed by file name, in sorted order."""
    schemas = {}
    for name in sorted(os.listdir(schema_dir)):
        if name.endswith(".json"):
            with open(os.path.join(schema_dir, name), encoding="utf-8") as f:
                schemas[name] = json.load(f)
    return schemas


def schemas_digest(schemas: dict[str, dict]) -> str:
    canon = json.dumps(schemas, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


class _Compiler:
    """Turns schema nodes into Python functions; holds the tables the functions share."""

    def __init__(self, schemas: dict[str, dict]):
        self.schemas = schemas
        self.func_names: dict[tuple[str, str], str] = {}
        self.used_names: set[str] = set()
        self.pending: list[tuple[str, dict, str]] = []
        self.constants: dict[str, str] = {}  # python expression -> constant name
        self.functions: list[str] = []
        self.inline_count = 0
        self.pattern_sources: dict[str, str] = {}   # hand-written pattern checks used
        self.used_names.update(name for name, _ in PATTERN_CHECKS.values())

    # ---- names and shared constants -------------------------------------------------------

    def _unique(self, base: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", base)
        name, n = base, 2
        while name in self.used_names:
            name, n = f"{base}_{n}", n + 1
        self.used_names.add(name)
        return name

    def constant(self, prefix: str, expr: str) -> str:
        if expr not in self.constants:
            self.constants[expr] = self._unique(f"_{prefix}{len(self.constants)}")
        return self.constants[expr]

    def regex(self, pattern: str) -> str:
        """The name of a function: does re.search(pattern, s) find a match."""
        if pattern in PATTERN_CHECKS:
            name, source = PATTERN_CHECKS[pattern]
            if name not in self.pattern_sources:
                _verify_pattern_check(pattern, name, source)
                self.pattern_sources[name] = source
            return name
        return self.constant("RE", f"_Search({pattern!r})")

    def string_set(self, values) -> str:
        return self.constant("SET", f"frozenset({tuple(values)!r})")

    # ---- references -----------------------------------------------------------------------

    def resolve(self, ref: str, base_file: str) -> tuple[str, str]:
        file, _, pointer = ref.partition("#")
        file = file or base_file
        if file not in self.schemas:
            raise ValueError(f"{base_file}: $ref {ref!r}: no schema file {file!r}")
        return file, pointer

    def node(self, file: str, pointer: str) -> dict:
        node = self.schemas[file]
        for part in [p for p in pointer.split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if part not in node:
                raise ValueError(f"{file}#{pointer}: unresolvable JSON pointer")
            node = node[part]
        return node

    def function_for_ref(self, file: str, pointer: str) -> str:
        key = (file, pointer)
        if key not in self.func_names:
            stem = file.removesuffix(".json").replace("-schema", "")
            label = pointer.rsplit("/", 1)[-1] if pointer else "root"
            name = self._unique(f"_{stem}_{label}")
            self.func_names[key] = name
            self.pending.append((name, self.node(file, pointer), file))
        return self.func_names[key]

    def function_for_inline(self, schema: dict, file: str) -> str:
        self.inline_count += 1
        name = self._unique(f"_inline{self.inline_count}")
        self.pending.append((name, schema, file))
        return name

    def compile_pending(self) -> None:
        while self.pending:
            name, schema, file = self.pending.pop(0)
            body = self.checks(schema, "x", file, 1, 0)
            self.functions.append("\n".join([f"def {name}(x):", *body, "    return True", "", ""]))

    # ---- the checks for one schema node ---------------------------------------------------

    def checks(self, schema: dict, v: str, file: str, ind: int, depth: int) -> list[str]:
        """Statements that `return False` when the value named v violates schema."""
        if not isinstance(schema, dict):
            raise ValueError(f"{file}: boolean or non-object schema {schema!r} is not supported")
        unknown = set(schema) - SUPPORTED - ANNOTATION_KEYWORDS
        if unknown:
            raise ValueError(f"{file}: unsupported keyword(s) {sorted(unknown)}")
        pad = "    " * ind
        if "$ref" in schema:  # draft-04: siblings of $ref are ignored
            fn = self.function_for_ref(*self.resolve(schema["$ref"], file))
            return [f"{pad}if not {fn}({v}): return False"]
        out: list[str] = []
        types = schema.get("type")
        if isinstance(types, str):
            types = [types]
        known = types[0] if types and len(types) == 1 else None
        if types:
            for t in types:
                if t not in TYPE_CHECKS:
                    raise ValueError(f"{file}: type {t!r} is not supported")
            test = " or ".join(TYPE_CHECKS[t].format(v=v) for t in types)
            out.append(f"{pad}if not ({test}): return False")
        if "enum" in schema:
            values = schema["enum"]
            if not all(isinstance(e, str) for e in values):
                raise ValueError(f"{file}: only string enums are supported")
            s = self.string_set(values)
            test = f"{v} in {s}" if known == "string" else f"(isinstance({v}, str) and {v} in {s})"
            out.append(f"{pad}if not ({test}): return False")
        groups = [
            (OBJECT_KEYWORDS, "object", self.object_checks),
            (ARRAY_KEYWORDS, "array", self.array_checks),
            (STRING_KEYWORDS, "string", self.string_checks),
            (NUMBER_KEYWORDS, "number", self.number_checks),
        ]
        for keywords, kind, emit in groups:
            if not keywords & set(schema):
                continue
            if known == kind or (kind == "number" and known == "integer"):
                out += emit(schema, v, file, ind, depth)
                continue
            guard = NUMBER_GUARD.format(v=v) if kind == "number" else TYPE_CHECKS[kind].format(v=v)
            body = emit(schema, v, file, ind + 1, depth)
            if body:
                out += [f"{pad}if {guard}:", *body]
        for sub in schema.get("allOf", []):
            out += self.checks(sub, v, file, ind, depth)
        if "anyOf" in schema:
            fns = [self.function_for_inline(sub, file) for sub in schema["anyOf"]]
            out.append(f"{pad}if not ({' or '.join(f'{fn}({v})' for fn in fns)}): return False")
        if "not" in schema:
            fn = self.function_for_inline(schema["not"], file)
            out.append(f"{pad}if {fn}({v}): return False")
        return out

    def object_checks(self, schema: dict, v: str, file: str, ind: int, depth: int) -> list[str]:
        pad = "    " * ind
        out: list[str] = []
        required = schema.get("required", [])
        if required:
            test = " or ".join(f"{k!r} not in {v}" for k in required)
            out.append(f"{pad}if {test}: return False")
        props = schema.get("properties", {})
        w = f"v{depth + 1}"
        for key, sub in props.items():
            body = self.checks(sub, w, file, ind + 1, depth + 1)
            single = len(body) == 1 and body[0].lstrip().startswith("if not ")
            if single and body[0].endswith(": return False"):
                # one test: `if key in v and not <test on v[key]>: return False`
                test = body[0].strip()[len("if not "):-len(": return False")]
                test = re.sub(rf"\b{w}\b", f"{v}[{key!r}]", test)
                out.append(f"{pad}if {key!r} in {v} and not {test}: return False")
            elif body:
                out += [f"{pad}if {key!r} in {v}:", f"{pad}    {w} = {v}[{key!r}]", *body]
        patterns = schema.get("patternProperties", {})
        additional = schema.get("additionalProperties", True)
        if additional is True or additional == {}:
            additional = None
        if not patterns and additional is None:
            return out
        k = f"k{depth + 1}"
        loop: list[str] = []
        track = bool(patterns) and additional is not None
        if track:
            loop.append(f"{pad}    matched = False")
        for pattern, sub in patterns.items():
            body = self.checks(sub, w, file, ind + 2, depth + 1)
            rx = self.regex(pattern)
            loop.append(f"{pad}    if {rx}({k}):")
            loop += [f"{pad}        matched = True"] if track else []
            loop += body or [f"{pad}        pass"]
        if additional is not None:
            conds = ["not matched"] if track else []
            if props:
                conds.append(f"{k} not in {self.string_set(props)}")
            if additional is False:
                body = [f"{pad}        return False"]
            else:
                body = self.checks(additional, w, file, ind + 2, depth + 1)
            if conds:
                loop += [f"{pad}    if {' and '.join(conds)}:", *body]
            else:
                loop += [line[4:] for line in body]
        out += [f"{pad}for {k}, {w} in {v}.items():", *loop]
        return out

    def array_checks(self, schema: dict, v: str, file: str, ind: int, depth: int) -> list[str]:
        pad = "    " * ind
        out: list[str] = []
        if "minItems" in schema:
            out.append(f"{pad}if len({v}) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            out.append(f"{pad}if len({v}) > {int(schema['maxItems'])}: return False")
        items = schema.get("items")
        if items is not None:
            if not isinstance(items, dict):
                raise ValueError(f"{file}: tuple-form items is not supported")
            w = f"v{depth + 1}"
            body = self.checks(items, w, file, ind + 1, depth + 1)
            if body:
                out += [f"{pad}for {w} in {v}:", *body]
        return out

    def string_checks(self, schema: dict, v: str, file: str, ind: int, depth: int) -> list[str]:
        pad = "    " * ind
        out: list[str] = []
        if "minLength" in schema:
            out.append(f"{pad}if len({v}) < {int(schema['minLength'])}: return False")
        if "maxLength" in schema:
            out.append(f"{pad}if len({v}) > {int(schema['maxLength'])}: return False")
        if "pattern" in schema:
            out.append(f"{pad}if not {self.regex(schema['pattern'])}({v}): return False")
        return out

    def number_checks(self, schema: dict, v: str, file: str, ind: int, depth: int) -> list[str]:
        pad = "    " * ind
        tests = []
        if "minimum" in schema:
            tests.append(f"{v} < {schema['minimum']!r}")
        if "maximum" in schema:
            tests.append(f"{v} > {schema['maximum']!r}")
        return [f"{pad}if {' or '.join(tests)}: return False"]


HEADER = '''\
# Generated by scripts/gen-validator.py from spec-schemas/*.json. DO NOT EDIT:
# change the schemas and run `python scripts/gen-validator.py` (tests fail when this is stale).
'''


def generate(schemas: dict[str, dict], roots: dict[str, str] = ROOTS) -> dict[str, str]:
    """The text of both generated modules, keyed by file name. roots maps each is_valid_<kind>
    entry point to its root schema file."""
    comp = _Compiler(schemas)
    entry = {kind: comp.function_for_ref(root, "") for kind, root in roots.items()}
    comp.compile_pending()
    digest = schemas_digest(schemas)
    lines = [
        HEADER,
        '"""Fast schema checks: is_valid_<kind>(doc) is True when doc matches '
        'spec-schemas/<kind>.\n\n'
        "Plain Python compiled from the schemas (draft-04 semantics, as jsonschema's "
        "Draft4Validator);\n"
        'it answers only yes/no. pyoci.spec.validate asks jsonschema to explain a "no"."""',
        "",
        f"SCHEMAS_SHA256 = {digest!r}",
        f"ROOTS = {roots!r}",
        "",
    ]
    if any(expr.startswith("_Search(") for expr in comp.constants):
        lines += ["", SEARCH_CLASS]
    lines += [f"{name} = {expr}" for expr, name in comp.constants.items()]
    lines += ["", "", ""]
    lines += [source + "\n\n" for source in comp.pattern_sources.values()]
    text = "\n".join(lines) + "".join(comp.functions)
    for kind, fn in entry.items():
        text += (
            f"def is_valid_{kind}(doc) -> bool:\n"
            f'    """True when doc matches spec-schemas/{roots[kind]}."""\n'
            f"    return {fn}(doc)\n\n\n"
        )
    validator = text.rstrip("\n") + "\n"

    body = pprint.pformat(schemas, indent=1, width=100, sort_dicts=False)
    schemas_text = (
        HEADER
        + '"""spec-schemas/*.json as Python literals, keyed by file name '
        + '(the jsonschema slow path\n'
        + 'resolves $refs like "defs.json#/definitions/Uint32" against these keys)."""\n\n'
        + f"SCHEMAS_SHA256 = {digest!r}\n"
        + f"ROOTS = {roots!r}\n\n"
        + f"SCHEMAS = {body}\n"
    )
    return {VALIDATOR_MODULE: validator, SCHEMAS_MODULE: schemas_text}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    outputs = generate(load_schemas())
    stale = []
    for name, text in outputs.items():
        path = os.path.join(OUT_DIR, name)
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        stale.append(name)
        if not check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if check and stale:
        print(f"stale: {', '.join(stale)}; run scripts/gen-validator.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote pyoci/spec/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
