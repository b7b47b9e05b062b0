"""The bundled synthetic clinical-style data set: nl / ro / es corpora, NER, screening records, a tokenizer.

Why it exists: the study (further pretraining, then fine-tuning) must run anywhere, offline, on no patient
data. Every text is generated from templates and word lists written for this project; no real note is
copied. Where each part lives:
    vocabulary/*.json, vocabulary.py   the word lists and templates (package data), and their loader
    generator.py                       template filling and documents of each genre (why the data looks so)
    spans.py                           text with entity offsets; the BRAT and CoNLL formats (the CoNLL policy)
    shapes.py                          the real corpus each language's NER imitates: file shape, type names
    ud.py                              the ro documents in CoNLL-U, as Universal Dependencies publishes MoNERo
    contamination.py                   test documents and test patients' notes planted in the clinical
                                       corpora, for `prepare`'s exclude: rule to find (why and which kinds)
    write.py                           the files, each from its own seeded generator (determinism)

Layout written by `write_sample_data(out, seed, scale, contaminate=True)`:
    corpora/<domain>_<lang>.jsonl       {"text", "language", "domain"} per line; clinical ones also "patient_id"
                                        and, unless contaminate=False (--clean), planted test documents and
                                        test patients' notes among the generated ones
    contamination.json                  the planted records: {"clinical_<lang>": [{corpus, line (1-based),
                                        kind, source, document, patient_id (kind patient)}]}, no text
    ner/ro/monero.tsv                   MoNERo-style columns (token lemma tag POS), one file, no split
    ner/ro/monero.conllu                the same documents in CoNLL-U, tags as BioNERLabel in MISC
    ner/<es|nl>/<split>/<doc>.txt|.ann  BRAT standoff, one sentence per line, offsets in characters; es with
                                        PharmaCoNER-style types, # notes and N lines (es_train_0000.ann
                                        with PharmaCoNER's offset slips); nl with Dutch types
    ner/<es|nl>/<split>.conll           the same documents in IOB2, in sorted document-name order
    ner/<es|nl>/annotation.conf         the language's types, for the brat annotation tool
    screening/<lang>/<split>.jsonl      {"patient_id", "note_id", "text", "label"}, label per patient
    tokenizer/                          WordPiece built from the clean corpora (AutoTokenizer.from_pretrained)
    prepare.yaml, README.md             a ready `medtrain prepare` config; what each folder holds
"""

from medtrain.data.sample.generator import DOMAINS
from medtrain.data.sample.spans import ENTITY_TYPES, TOKEN_PATTERN
from medtrain.data.sample.vocabulary import LANGUAGES
from medtrain.data.sample.write import SPLITS, write_sample_data

__all__ = ["DOMAINS", "ENTITY_TYPES", "LANGUAGES", "SPLITS", "TOKEN_PATTERN", "write_sample_data"]
