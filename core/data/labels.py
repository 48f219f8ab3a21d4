"""The one label convention of the project: 0 = REAL, 1 = FAKE (AI-generated), probability = P(FAKE).

Every dataset adapter maps its own label names onto this convention through `resolve_label_names`,
visibly: the mapping used is returned so the CLI can print it and the app can show it.
"""
from __future__ import annotations

REAL = 0
FAKE = 1
CLASS_NAMES = ("REAL", "FAKE")

# Names seen in the wild, lower-cased. Hemg's class folders were `AiArtData` and `RealArt`;
# CIFAKE uses REAL/FAKE.
_KNOWN_NAMES = {
    "real": REAL, "realart": REAL, "human": REAL, "authentic": REAL, "photo": REAL, "nature": REAL,
    "fake": FAKE, "ai": FAKE, "aiartdata": FAKE, "aiart": FAKE, "ai_generated": FAKE,
    "ai-generated": FAKE, "generated": FAKE, "synthetic": FAKE, "sd": FAKE,
}


class LabelMappingError(ValueError):
    """A dataset's label names could not be mapped onto REAL/FAKE without guessing."""


def label_from_name(name: str, overrides: dict[str, int] | None = None, case_sensitive: bool = False) -> int:
    """Map one class name (folder name, ClassLabel name) to 0/1; raise LabelMappingError if unknown."""
    key = name if case_sensitive else name.lower()
    if overrides:
        table = overrides if case_sensitive else {k.lower(): v for k, v in overrides.items()}
        if key in table:
            return table[key]
    if case_sensitive:
        # Exact names only: the CIFAKE spelling.
        if key in CLASS_NAMES:
            return CLASS_NAMES.index(key)
    elif key in _KNOWN_NAMES:
        return _KNOWN_NAMES[key]
    raise LabelMappingError(
        f"class name {name!r} is not a known REAL/FAKE name; pass a mapping, e.g. --class-map '{name}=FAKE'")


def parse_class_map(text: str | None) -> dict[str, int]:
    """Parse 'a=REAL,b=FAKE' (or a=0,b=1) into {'a': 0, 'b': 1}. Empty/None gives {}."""
    if not text:
        return {}
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise LabelMappingError(f"bad mapping entry {part!r}: expected NAME=REAL or NAME=FAKE")
        name, value = (s.strip() for s in part.split("=", 1))
        out[name] = parse_label_value(value)
    return out


def parse_label_value(value) -> int:
    """'REAL'/'FAKE'/'0'/'1'/0/1 -> 0/1; anything else raises LabelMappingError."""
    s = str(value).strip().upper()
    if s in ("0", "REAL"):
        return REAL
    if s in ("1", "FAKE", "AI"):
        return FAKE
    raise LabelMappingError(f"label {value!r} is not one of 0, 1, REAL, FAKE")


def describe_mapping(mapping: dict) -> str:
    """'AiArtData -> FAKE (1), RealArt -> REAL (0)' for printing and display."""
    return ", ".join(f"{k} -> {CLASS_NAMES[v]} ({v})" for k, v in sorted(mapping.items(), key=lambda kv: str(kv[0])))
