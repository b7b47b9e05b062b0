"""NER data: readers for the published formats -> documents with text, gold entities and IOB2 words; label maps;
first-subword alignment and windows; BRAT output; exact-offset scores.

Every reader gives documents with a `text`, every gold `Entity` (character offsets into that text) and sentences
of words with IOB2 tags derived from the entities (`entities.py` holds the types and that policy). Errors name
the file and line and never quote the text (it is clinical data). One module per format, behind `read_ner`:

    brat.py       a folder of .txt + .ann standoff files
    columns.py    column (CoNLL) files, MoNERo's TSV among them
    conllu.py     CoNLL-U (Universal Dependencies): the tag in MISC or a field, offsets in `# text`; predictions
                  written back into a copy of the file
    evaluate.py   `medtrain evaluate`: predicted files scored against gold
    encoding.py   sentences -> windows of subwords with first-subword labels, predictions -> tags
    scoring.py    the exact-offset span scorer shared by fine-tuning, the study and `medtrain evaluate`
    read.py       `read_ner` / `read_ner_corpus` and the label space (`apply_labels`)
"""

from medtrain.data.ner.brat import write_brat
from medtrain.data.ner.conllu import write_conllu_predictions
from medtrain.data.ner.encoding import DEFAULT_STRIDE_WORDS, IGNORE_INDEX, decode, encode, label_list
from medtrain.data.ner.entities import (
    Entity, Feature, NerCorpus, NerDocument, Sentence, Word, flat_spans, repair_iob2, synthetic_text,
    tags_to_entities, words_by_line,
)
from medtrain.data.ner.read import apply_labels, read_ner, read_ner_corpus
from medtrain.data.ner.scoring import corpus_span_scores, exact_span_scores

__all__ = [
    "DEFAULT_STRIDE_WORDS", "Entity", "Feature", "IGNORE_INDEX", "NerCorpus", "NerDocument", "Sentence", "Word",
    "apply_labels", "corpus_span_scores", "decode", "encode", "exact_span_scores", "flat_spans", "label_list",
    "read_ner", "read_ner_corpus", "repair_iob2", "synthetic_text", "tags_to_entities", "words_by_line",
    "write_brat", "write_conllu_predictions",
]
