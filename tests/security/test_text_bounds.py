"""Finding 7: a 20 MB subtitle was tokenized whole before it was shortened (3.9 GiB, 69 s), and a
CSV cell over 128 KiB raised out of the manifest reader and ended the run. Now a subtitle is cut
to `MAX_SUBTITLE_CHARS` before anything tokenizes it, and a long cell fails its row only.
Memory is measured in a child process (peak RSS in the failure message)."""

from __future__ import annotations

from pathlib import Path

from pipelines.manifest import MAX_CSV_FIELD_CHARS, read_mer2025
from pipelines.stages import MAX_SUBTITLE_CHARS, clean_subtitle
from tests.security.bounded import run_child

BIG = 20 * 2**20  # a 20 MB subtitle


def corpus_with_long_cell(root: Path, cell: int) -> Path:
    (root / "video").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / "video" / f"{name}.mp4").write_bytes(b"x")
    with open(root / "subtitle_chieng.csv", "w", encoding="utf-8") as f:
        f.write("name,chinese,english\na,zh,hello\n")
        f.write("b,zh,\"" + "word " * (cell // 5) + "\"\n")
        f.write("c,zh,bye\n")
    return root


def test_a_csv_cell_over_the_limit_fails_its_row_only(tmp_path):
    root = corpus_with_long_cell(tmp_path / "corpus", MAX_CSV_FIELD_CHARS + 10)
    rows = {r.name: r for r in read_mer2025(root)}
    assert rows["a"].subtitle == "hello" and not rows["a"].error
    assert rows["c"].subtitle == "bye" and not rows["c"].error
    assert rows["b"].error.startswith("manifest/field-too-large") and "subtitle_chieng.csv line 3" in rows["b"].error
    assert "['english']" in rows["b"].error and rows["b"].subtitle == ""


def test_a_20_mb_cell_reads_in_bounded_memory(tmp_path):
    root = corpus_with_long_cell(tmp_path / "corpus", BIG)
    code = ("from pipelines.manifest import read_mer2025\n"
            f"rows = {{r.name: r for r in read_mer2025({str(root)!r})}}\n"
            "print(rows['b'].error[:80], '|', rows['a'].subtitle, rows['c'].subtitle)\n")
    run = run_child(code, address_space_mb=3072, timeout_s=120)
    assert run.returncode == 0 and "manifest/field-too-large" in run.out and "| hello bye" in run.out, run.describe()
    assert run.peak_rss_mb < 600, run.describe()


def test_a_20_mb_subtitle_is_cut_before_tokenizing(tiny_models):
    assert len(clean_subtitle("  " + "x" * (MAX_SUBTITLE_CHARS + 5))) == MAX_SUBTITLE_CHARS
    code = ("import time\nfrom transformers import AutoTokenizer\nfrom modeling.prompt import fit_prompt\n"
            "from pipelines.stages import clean_subtitle\n"
            f"tok = AutoTokenizer.from_pretrained({str(tiny_models['llm'])!r})\n"
            f"sub = clean_subtitle('so sad today ' * {BIG // 13})\n"
            "t0 = time.perf_counter()\nfitted = fit_prompt(tok, sub, 'How does the person feel?')\n"
            "print(len(sub), fitted.fits, len(fitted.ids) <= 800, round(time.perf_counter() - t0, 2))\n")
    run = run_child(code, address_space_mb=4096, timeout_s=120)
    assert run.returncode == 0 and run.out.startswith(f"{MAX_SUBTITLE_CHARS} True True"), run.describe()
    assert float(run.out.split()[-1]) < 10 and run.peak_rss_mb < 1000, run.describe()
