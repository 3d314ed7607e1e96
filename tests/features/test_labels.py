"""The corpus label CSVs: one reader (first row of a name wins, columns checked) and the stored form."""

from __future__ import annotations

import fsspec
import pytest

from core.errors import InputError, MissingFileError
from features.labels import (
    LABEL_FILES,
    openset_from_store,
    openset_to_store,
    read_corpus_labels,
    reason_to_store,
)

TRACK2, TRACK3 = LABEL_FILES["mercaptionplus"]


def write(root, name: str, text: str) -> None:
    (root / name).write_text(text, encoding="utf-8")


def by_name(df) -> dict:
    return {n: (o, r) for n, o, r in zip(df["name"], df["openset"], df["reason"])}


def test_a_repeated_name_keeps_its_first_row(tmp_path):
    write(tmp_path, TRACK2, "name,openset\na,\"[happy, relaxed]\"\nb,[]\na,[sad]\nb,['angry']\n")
    write(tmp_path, TRACK3, "name,reason\nb,first reason\na,only reason\nb,second reason\n")
    labels = by_name(read_corpus_labels(tmp_path))
    assert labels == {"a": (["happy", "relaxed"], "only reason"), "b": ([], "first reason")}


def test_empty_cells_and_missing_rows(tmp_path):
    write(tmp_path, TRACK2, "name,openset\nneutral,[]\nblank,\nNA,\"['Sad', 'tired']\"\n")
    write(tmp_path, TRACK3, "name,reason\nneutral,\"In the text, calm.\"\nblank,   \ndescribed,\"In the text, joy.\"\n")
    labels = by_name(read_corpus_labels(tmp_path))
    assert labels["neutral"] == ([], "In the text, calm.")  # an empty list is a label: neutral
    assert labels["blank"] == ([], None)  # an empty openset cell is an empty list; a blank reason is none
    assert labels["NA"] == (["sad", "tired"], None)  # "NA" is a name, not a missing value
    assert labels["described"] == (None, "In the text, joy.")  # no track-2 row: no label list


def test_one_table_or_none(tmp_path):
    assert read_corpus_labels(tmp_path).empty
    write(tmp_path, TRACK3, "name,reason\na,\"In the text, a.\"\n")
    assert by_name(read_corpus_labels(tmp_path)) == {"a": (None, "In the text, a.")}
    assert read_corpus_labels(tmp_path, subset="ovmerd").empty
    write(tmp_path, LABEL_FILES["ovmerd"][0], "name,openset\nz,[worried]\n")
    assert by_name(read_corpus_labels(tmp_path, subset="ovmerd")) == {"z": (["worried"], None)}


@pytest.mark.parametrize(
    "table, text, column",
    [
        (TRACK2, "name,labels\na,[happy]\n", "openset"),
        (TRACK2, "sample,openset\na,[happy]\n", "name"),
        (TRACK3, "name,text\na,b\n", "reason"),
    ],
)
def test_a_missing_column_names_the_file_and_the_column(tmp_path, table, text, column):
    write(tmp_path, TRACK2, "name,openset\na,[happy]\n")
    write(tmp_path, TRACK3, "name,reason\na,b\n")
    write(tmp_path, table, text)
    with pytest.raises(InputError) as err:
        read_corpus_labels(tmp_path)
    message = str(err.value)
    assert str(tmp_path / table) in message and f"missing column(s) ['{column}']" in message


def test_bad_root_and_subset(tmp_path):
    with pytest.raises(MissingFileError, match="no-such-root"):
        read_corpus_labels(tmp_path / "no-such-root")
    with pytest.raises(InputError, match="'mer2099' is not one of"):
        read_corpus_labels(tmp_path, subset="mer2099")


def test_an_fsspec_url_root():
    fs = fsspec.filesystem("memory")
    fs.pipe({f"/labels-root/{TRACK2}": b"name,openset\na,[happy]\na,[sad]\n",
             f"/labels-root/{TRACK3}": b'name,reason\na,"In the text, a."\n'})
    try:
        assert by_name(read_corpus_labels("memory://labels-root")) == {"a": (["happy"], "In the text, a.")}
    finally:
        fs.rm("/labels-root", recursive=True)


def test_stored_form_keeps_unlabelled_apart_from_neutral():
    assert openset_to_store(None) == "" and openset_from_store("") is None and openset_from_store(None) is None
    assert openset_to_store([]) == "[]" and openset_from_store("[]") == []
    assert openset_to_store(["Happy", "relaxed"]) == "[happy, relaxed]"
    assert openset_to_store("['happy', 'relaxed']") == "[happy, relaxed]"
    for words in (["happy"], ["happy", "relaxed"], []):
        assert openset_from_store(openset_to_store(words)) == words
    assert reason_to_store(None) == reason_to_store("  ") == "" and reason_to_store("In the text.") == "In the text."


def test_a_byte_that_is_not_utf8_costs_only_its_character(tmp_path):
    write(tmp_path, TRACK2, "name,openset\na,[happy]\n")
    (tmp_path / TRACK3).write_bytes(
        "\ufeffname,reason\na,caf\xe9 talk\nb,fine\n".encode("utf-8").replace(b"\xc3\xa9", b"\xe9")
    )
    assert by_name(read_corpus_labels(tmp_path)) == {"a": (["happy"], "caf\ufffd talk"), "b": (None, "fine")}
