"""Named entities for long-term memory (skills, companies, roles, ...) behind one interface.

The default :class:`SpacyNER` needs nothing downloaded: spaCy's blank English pipeline
with an ``entity_ruler`` loaded from a JSONL pattern file (the packaged
``data/ner_patterns.jsonl`` plus any files the user adds, same format as spaCy's
``EntityRuler.from_disk``). Naming a trained pipeline (``NER_MODEL``, a package
name or a directory) uses it, with the ruler placed before its statistical ``ner``
so the pattern labels win where both match.

>>> ner = SpacyNER()
>>> ner("I am a data scientist at Contoso and write Python")
{'companies': ['Contoso'], 'roles': ['data scientist'], 'skills': ['Python']}
"""

from __future__ import annotations

import importlib.resources
import os
from typing import Protocol, Sequence

# spaCy labels -> the keys of ner_entities (other labels are lower-cased).
LABEL_KEYS = {"SKILL": "skills", "COMPANY": "companies", "ORG": "companies", "ROLE": "roles"}


class EntityExtractor(Protocol):
    """Text -> {kind: [entity text, ...]} (JSON-serialisable, kinds in sorted order)."""

    def __call__(self, text: str) -> dict[str, list[str]]: ...


def default_patterns_path():
    """The packaged pattern file (skills, companies, roles)."""
    return importlib.resources.files("fastlstm.models.chat").joinpath("data/ner_patterns.jsonl")


class SpacyNER:
    """spaCy entity extraction: blank English + entity ruler by default, or the trained
    pipeline ``model`` (name or path) with the ruler added. ``patterns`` are extra JSONL files."""

    def __init__(self, model: str | None = None, *, patterns: Sequence[str | os.PathLike] = (),
                 include_default_patterns: bool = True) -> None:
        import spacy
        from spacy.util import is_package

        if model:
            if not (is_package(model) or os.path.isdir(model)):
                raise ValueError(f"NER_MODEL {model!r} is neither an installed spaCy pipeline package nor a "
                                 f"directory (nothing is downloaded; leave it empty for the blank pipeline)")
            self.nlp = spacy.load(model)
        else:
            self.nlp = spacy.blank("en")
        self.model = model or "blank:en"
        before = {"before": "ner"} if "ner" in self.nlp.pipe_names else {}
        ruler = self.nlp.add_pipe("entity_ruler", name="fastlstm_entity_ruler", config={"overwrite_ents": True},
                                  **before)
        files = ([default_patterns_path()] if include_default_patterns else []) + list(patterns)
        for path in files:
            ruler.add_patterns(list(_read_patterns(path)))

    def __call__(self, text: str) -> dict[str, list[str]]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        found: dict[str, list[str]] = {}
        for ent in self.nlp(text).ents:
            key = LABEL_KEYS.get(ent.label_, ent.label_.lower())
            if ent.text not in found.setdefault(key, []):
                found[key].append(ent.text)
        return dict(sorted(found.items()))


def _read_patterns(path):
    import srsly

    try:
        yield from srsly.read_jsonl(path)
    except ValueError as e:
        raise ValueError(f"{path}: not a JSONL pattern file ({e})") from None


def no_entities(text: str) -> dict[str, list[str]]:
    """An extractor that finds nothing (for stores that should not keep entities)."""
    return {}


