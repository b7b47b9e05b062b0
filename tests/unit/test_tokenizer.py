"""The sample WordPiece builder: the same texts give the same bytes, frequent words stay whole, rare words
are spelt in known pieces rather than [UNK]."""

from __future__ import annotations

from pathlib import Path

from medtrain.data.tokenizer import SPECIAL_TOKENS, fingerprint, load_tokenizer, train_wordpiece

TEXTS = ["Pacientul prezintă febră și tuse.", "Pacientul nu prezintă febră.", "El paciente presenta tos.",
         "Patiënt heeft koorts.", "Pacientul prezintă dispnee."]


def test_same_texts_same_bytes(tmp_path: Path) -> None:
    """The Rust WordPiece trainer failed this in 4 runs of 4 (tie order, huggingface/tokenizers#1794)."""
    texts = TEXTS * 3 + [f"cuvânt{i} rar{i % 7}" for i in range(50)]  # many count ties
    for name in ("one", "two"):
        train_wordpiece(texts, tmp_path / name, vocab_size=120)
    assert (tmp_path / "one/tokenizer.json").read_bytes() == (tmp_path / "two/tokenizer.json").read_bytes()
    assert fingerprint(tmp_path / "one") == fingerprint(tmp_path / "two")


def test_frequent_words_whole_rare_words_in_pieces_never_unknown(tmp_path: Path) -> None:
    alphabet = {c for text in TEXTS for c in text if not c.isspace()}
    budget = len(SPECIAL_TOKENS) + 2 * len(alphabet) + 3  # room for the three most frequent words
    train_wordpiece(TEXTS, tmp_path, vocab_size=budget)
    tokenizer = load_tokenizer(tmp_path)
    assert len(tokenizer) == budget
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(len(SPECIAL_TOKENS))] == list(SPECIAL_TOKENS)
    assert tokenizer.tokenize("Pacientul prezintă febră") == ["Pacientul", "prezintă", "febră"]  # 3, 3, 2 times
    # "." (5 times) is a character; "nu" and "tuse" (once each) are not in the vocabulary: spelt out
    assert tokenizer.tokenize("nu tuse.") == ["n", "##u", "t", "##u", "##s", "##e", "."]
    ids = tokenizer("koorts dispnee tos")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "koorts dispnee tos"


GENERAL = ["The weather is warm and the match starts at noon.", "The team won the match in the rain."] * 4
CLINICAL = ["The patient has cardiomyopathy and hypertension.", "Hypertension with cardiomyopathy and tachycardia.",
            "Tachycardia and hypertension were treated."] * 3


def test_whole_words_only_from_general_text_domain_words_in_a_few_pieces(tmp_path: Path) -> None:
    train_wordpiece(GENERAL + CLINICAL, tmp_path, vocab_size=200, whole_word_texts=GENERAL)
    tokenizer = load_tokenizer(tmp_path)
    vocab = tokenizer.get_vocab()
    assert tokenizer.tokenize("The weather is warm") == ["The", "weather", "is", "warm"]
    for word in ("cardiomyopathy", "hypertension", "tachycardia", "patient", "treated"):
        assert word not in vocab  # seen only outside the general text: never whole
        pieces = tokenizer.tokenize(word)
        assert 2 <= len(pieces) <= 5 and pieces[0] in vocab and all(p.startswith("##") for p in pieces[1:]), pieces
        assert tokenizer.convert_tokens_to_string(pieces) == word
    assert "hyper" in vocab and "##tensi" in vocab  # frequent fragments of all texts fill the budget
    assert tokenizer.unk_token_id not in tokenizer("tachycardia Hypertension")["input_ids"]


def test_fragments_are_deterministic_and_the_budget_holds(tmp_path: Path) -> None:
    texts = CLINICAL + [f"cuvânt{i} rar{i % 7}" for i in range(50)]  # many fragment count ties
    for name in ("one", "two"):
        train_wordpiece(iter(texts), tmp_path / name, vocab_size=150, whole_word_texts=iter(GENERAL))
    assert (tmp_path / "one/tokenizer.json").read_bytes() == (tmp_path / "two/tokenizer.json").read_bytes()
    assert len(load_tokenizer(tmp_path / "one")) == 150
