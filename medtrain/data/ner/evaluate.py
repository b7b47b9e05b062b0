"""`medtrain evaluate GOLD PRED`: another system's predictions, or an older run's, scored on medtrain's terms.

Gold is read as fine-tuning reads test gold (BRAT offsets as written, as the shared tasks' scorers read them) and
predictions become entity sets per document; both then go through `span_report`, the scorer behind results.json
`test[lang]`, so a run's own `predictions/<lang>/` against its gold, with its scored types and bootstrap settings,
gives that run's numbers. Predicted .ann files need no .txt: their offsets are taken as written. Messages and the
report name files, lines, documents and types, never corpus text.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from medtrain import metrics
from medtrain.config import build_config, read_yaml
from medtrain.data.ner.entities import Entity, NerDocument, decoded_lines
from medtrain.data.ner.read import FORMATS, read_ner_corpus
from medtrain.data.ner.scoring import PRF, span_report, span_unit_counts
from medtrain.data.ner_format import ColumnFormat, LabelConfig
from medtrain.errors import UserError
from medtrain.finetune.config import EvalConfig

log = logging.getLogger(__name__)

__all__ = ["evaluate", "format_report", "load_labels", "parse_types"]

_OFFSETS = re.compile(r"(\d+) (\d+)")
_COLUMN_FORMATS = ("conll", "conllu")


@dataclasses.dataclass
class _LabelsSection:
    """What `--labels` reads from a file: its `labels:` (a fine-tuning config's other keys are not looked at)."""

    labels: LabelConfig


def load_labels(path: str | Path) -> LabelConfig:
    """The `labels:` section of a YAML file (a fine-tuning config, or a file holding only that section), checked
    key by key as a config's, so an error names its line."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data.get("labels"), dict):
        raise UserError("--labels needs a YAML file with a `labels:` mapping (map, keep, strict), as a fine-tuning "
                        "config has", path)
    return build_config(_LabelsSection, {"labels": data["labels"]}, path, lines).labels


def parse_types(text: str | None) -> set[str] | None:
    """`A,B` -> {"A", "B"}; None: every type of gold and predictions."""
    if text is None:
        return None
    types = {t.strip() for t in text.split(",")}
    if not types or any(not t or len(t.split()) != 1 for t in types):
        raise UserError(f"--types needs entity type names separated by commas, e.g. CHEM,DISO (got {text!r})")
    return types


def evaluate(gold: str | Path, pred: str | Path, fmt: str | None = None, pred_format: str | None = None,
             token: int | None = None, tag: str | None = None, discontinuous: str | None = None,
             labels: LabelConfig | None = None, language: str | None = None, types: set[str] | None = None,
             bootstrap: int | None = None, seed: int | None = None, alpha: float | None = None) -> dict[str, Any]:
    """The report of PRED against GOLD: `span_report`'s dict (results.json `test[lang]`'s keys), each per-type
    row with its predicted and correct counts, and what was compared (paths, formats, documents, bootstrap)."""
    gold, pred = Path(gold), Path(pred)
    fmt, pred_format = _formats(gold, pred, fmt, pred_format)
    ev = _eval_config(bootstrap, seed, alpha)
    columns = _columns({fmt, pred_format}, token, tag, discontinuous)
    _check_labels(labels, language)

    docs = read_ner_corpus(gold, fmt, columns, labels, language, as_written=True).documents  # type: ignore[arg-type]
    predicted = _read_predictions(gold, pred, fmt, pred_format, columns, docs)
    predicted = {i: _relabel(entities, labels, language) for i, entities in predicted.items()}
    missing = sum(d.doc_id not in predicted for d in docs)
    if missing:
        log.warning("%d of %d gold documents have no prediction in PRED: counted as predicting nothing", missing,
                    len(docs))

    present = {e.type for d in docs for e in d.entities} | {e.type for es in predicted.values() for e in es}
    if types is not None and types - present:
        log.warning("--types %s: in neither GOLD nor PRED", ",".join(sorted(types - present)))
    scored = present if types is None else types
    report = span_report(docs, predicted, scored, ev.bootstrap, ev.bootstrap_seed, ev.alpha)
    units = span_unit_counts(docs, predicted, scored)
    for entity_type, (correct, n_predicted, _) in metrics.add_counts(*units.values()).items():
        report["per_type"][entity_type].update(predicted=n_predicted, correct=correct)
    report.update(gold=str(gold), pred=str(pred), format=fmt, pred_format=pred_format, language=language,
                  documents=len(docs), documents_without_prediction=missing, units=len(units),
                  bootstrap={"n": ev.bootstrap, "seed": ev.bootstrap_seed, "alpha": ev.alpha})
    return report


def _formats(gold: Path, pred: Path, fmt: str | None, pred_format: str | None) -> tuple[str, str]:
    """GOLD's and PRED's formats, given or told by the paths; PRED is .ann files or in GOLD's own format."""
    for path, name in ((gold, "GOLD"), (pred, "PRED")):
        if not path.exists():
            raise UserError(f"{name} not found", path)
    fmt = fmt or ("brat" if gold.is_dir() else "conllu" if gold.suffix == ".conllu" else "conll")
    pred_format = pred_format or ("brat" if pred.is_dir() else fmt)
    for name, value in (("--format", fmt), ("--pred-format", pred_format)):
        if value not in FORMATS:
            raise UserError(f"{name} must be one of {', '.join(FORMATS)} (got {value!r})")
    if pred_format not in ("brat", fmt):
        raise UserError(f"--pred-format {pred_format}: predictions are BRAT .ann files or in GOLD's own format "
                        f"({fmt}); other formats' offsets do not line up with GOLD's")
    return fmt, pred_format


def _check_labels(labels: LabelConfig | None, language: str | None) -> None:
    """A map needs the language it applies to; a language names a map."""
    if language is not None and labels is None:
        raise UserError("--language picks which map of --labels applies; give --labels FILE too")
    if labels is not None and labels.map and language is None:
        raise UserError(f"--labels maps the types of {', '.join(sorted(labels.map))}: name GOLD's language with "
                        "--language")
    if labels is not None and labels.map and language not in labels.map:
        log.warning("labels.map has no entry for %s: its types keep their names", language)


def _eval_config(bootstrap: int | None, seed: int | None, alpha: float | None) -> EvalConfig:
    """Fine-tuning's `eval` settings, its defaults where an option is not given."""
    default = EvalConfig()
    try:
        return EvalConfig(default.bootstrap if bootstrap is None else bootstrap,
                          default.bootstrap_seed if seed is None else seed, default.alpha if alpha is None else alpha)
    except ValueError:
        raise UserError("--bootstrap must be >= 1 and --alpha between 0 and 1, e.g. 0.05") from None


def _columns(formats: set[str], token: int | None, tag: str | None, discontinuous: str | None) -> ColumnFormat | None:
    """The ColumnFormat of the column or CoNLL-U files among GOLD and PRED; the options are errors without one."""
    given = [name for name, value in (("--token", token), ("--tag", tag), ("--discontinuous", discontinuous))
             if value is not None]
    if not formats & set(_COLUMN_FORMATS):
        if given:
            raise UserError(f"{', '.join(given)}: for column (conll) and CoNLL-U files only; GOLD and PRED are BRAT")
        return None
    conllu = "conllu" in formats
    if conllu and tag is None:
        raise UserError("format conllu needs --tag misc:KEY (a key inside MISC, e.g. misc:BioNERLabel) or a "
                        "CoNLL-U field name")
    place: int | str = -1 if tag is None else int(tag) if re.fullmatch(r"-?\d+", tag) else tag
    if not conllu and not isinstance(place, int):
        raise UserError("--tag of a column (conll) file is a column index; misc:KEY and field names are for "
                        "format conllu")
    try:
        return ColumnFormat(token=0 if token is None else token, tag=place, discontinuous=discontinuous or "split")
    except ValueError as exc:
        raise UserError(f"--token/--tag/--discontinuous: {exc}") from None


def _read_predictions(gold: Path, pred: Path, fmt: str, pred_format: str, columns: ColumnFormat | None,
                      docs: list[NerDocument]) -> dict[str, list[Entity]]:
    """Predicted entities per document id; an id that GOLD lacks is an error naming the file that gives it."""
    if pred_format != "brat":
        return _read_columns(gold, pred, pred_format, columns, docs)
    if not pred.is_dir():
        hint = "" if fmt == "brat" else f", or a {fmt} file with predicted tags (--pred-format {fmt})"
        raise UserError(f"PRED must be a folder of .ann files{hint}", pred)
    files = sorted(pred.glob("*.ann"))
    if not files:
        raise UserError("no .ann files in this PRED folder", pred)
    ids = {d.doc_id for d in docs}
    for file in files:
        if file.stem not in ids:
            raise UserError(f"predicted document {file.stem} is not in GOLD (document ids must match GOLD's)", file)
    return {file.stem: _read_ann(file) for file in files}


def _read_ann(path: Path) -> list[Entity]:
    """Entity (`T`) lines, `ID<TAB>TYPE START END[;START END]...[<TAB>text]`, fragments in order as brat.py
    orders gold's; other annotation lines (R, E, A, N, #) are ignored."""
    entities = []
    for lineno, raw in enumerate(decoded_lines(path), 1):
        line = raw.rstrip("\r")
        if not line.startswith("T"):
            continue
        fields = line.split("\t", 2)
        entity_type, _, offsets = fields[1].partition(" ") if len(fields) > 1 else ("", "", "")
        if not entity_type or not offsets:
            raise UserError("entity line is not `ID<TAB>TYPE START END[;START END]<TAB>text`", path, lineno)
        fragments = []
        for part in offsets.split(";"):
            match = _OFFSETS.fullmatch(part.strip())
            if not match or int(match.group(1)) >= int(match.group(2)):
                raise UserError("entity offsets are not `START END[;START END]` with START < END", path, lineno)
            fragments.append((int(match.group(1)), int(match.group(2))))
        entities.append(Entity(entity_type, tuple(sorted(fragments)), (str(path), lineno)))
    return entities


def _read_columns(gold: Path, pred: Path, fmt: str, columns: ColumnFormat | None, docs: list[NerDocument]
                  ) -> dict[str, list[Entity]]:
    """Predicted tags in GOLD's own format. One PRED file stands for one GOLD file, so its documents take the
    gold file's name; their words must sit where gold's do, or the offsets would compare different things."""
    corpus = read_ner_corpus(pred, fmt, columns)  # type: ignore[arg-type]
    rename = gold.is_file() and pred.is_file() and gold.stem != pred.stem
    gold_words = {d.doc_id: _word_spans(d) for d in docs}
    predicted: dict[str, list[Entity]] = {}
    for doc in corpus.documents:
        doc_id = doc.doc_id
        if rename and (doc_id == pred.stem or doc_id.startswith(f"{pred.stem}-")):
            doc_id = gold.stem + doc_id[len(pred.stem):]
        if doc_id not in gold_words:
            raise UserError(f"predicted document {doc_id} is not in GOLD (document ids must match GOLD's)", pred)
        if _word_spans(doc) != gold_words[doc_id]:
            raise UserError(f"document {doc_id}: its words differ from GOLD's (a different tokenization or "
                            "file?), so their offsets cannot be compared", pred)
        predicted[doc_id] = doc.entities
    return predicted


def _word_spans(doc: NerDocument) -> list[tuple[int, int]]:
    return [(w.start, w.end) for s in doc.sentences for w in s.words]


def _relabel(entities: list[Entity], labels: LabelConfig | None, language: str | None) -> list[Entity]:
    """Predictions in the label space gold is read into: renamed by `labels.map[language]`, types outside `keep`
    dropped. A type already in the shared space (a value of the map, as a run's own predictions are) passes
    `strict`; any other unmapped type is then an error at its file:line, as it is in gold."""
    if labels is None:
        return entities
    rename = labels.rename(language) if language is not None else {}
    strict = labels.strict and language in labels.map
    keep = None if labels.keep is None else set(labels.keep)
    out = []
    for entity in entities:
        shared = rename.get(entity.type, entity.type)
        if strict and entity.type not in rename and entity.type not in rename.values():
            raise UserError(f"predicted entity type {entity.type} has no entry in labels.map.{language} "
                            "(labels.strict is set)", *(entity.source or ()))
        if keep is None or shared in keep:
            out.append(entity if shared == entity.type else dataclasses.replace(entity, type=shared))
    return out


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: micro P/R/F1 with intervals, one row per type, then what was counted."""
    ev = report["bootstrap"]
    lines = [f"{report['metric']}, {1 - ev['alpha']:.0%} bootstrap intervals ({ev['n']} resamples of "
             f"{report['bootstrap_unit']}s, seed {ev['seed']})", "",
             f"{'':<10} {'value':>7} {'lo':>7} {'hi':>7}"]
    lines += [f"{name:<10} " + " ".join(_number(report[name][k]) for k in ("value", "lo", "hi"))
              for name in ("precision", "recall", "f1")]
    lines.append(f"ceiling: {_number(report['recall_ceiling']).strip()} (the best recall a flat IOB2 tagger "
                 "can reach on this gold)")
    rows = list(report["per_type"].items())
    width = max([len("type"), len("micro"), *(len(t) for t, _ in rows)])
    header = ["precision", "recall", "f1", "support", "predicted", "correct"]
    lines += ["", f"{'type':<{width}} " + " ".join(f"{h:>9}" for h in header)]
    for name, scores in [*rows, ("micro", _micro_row(report))]:
        lines.append(f"{name:<{width}} " + " ".join(f"{_number(scores[h]):>9}" for h in header[:3])
                     + " " + " ".join(f"{scores[h]:>9}" for h in header[3:]))
    lines += ["", f"documents: {report['documents']} ({report['documents_without_prediction']} without a "
                  f"prediction); bootstrap units: {report['units']} ({report['bootstrap_unit']}s); scored types: "
                  f"{', '.join(report['scored_types']) or 'none'}"]
    return "\n".join(lines)


def _micro_row(report: dict[str, Any]) -> dict[str, Any]:
    """The totals row: the micro scores over the per-type counts."""
    rows = report["per_type"].values()
    return {**{k: report[k]["value"] for k in PRF}, **{k: sum(r[k] for r in rows)
                                                      for k in ("support", "predicted", "correct")}}


def _number(value: float | None) -> str:
    return "      -" if value is None else f"{value:7.4f}"
